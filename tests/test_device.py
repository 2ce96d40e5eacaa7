"""Devices. First the faults only an accelerator shows, run on the fake one (tests/fake_accelerator.py) whatever
--device says; then the smoke suite: every chapter's public pipeline at tiny sizes on --device (cpu by default;
`pytest --device cuda tests/test_device.py` on a GPU, `--device fake` for the fake accelerator), checking where
the outputs land and that they match the CPU's (exactly on the CPU and the fake accelerator, within a tolerance
on a real one)."""
import copy
import numpy as np
import pytest, torch
import torch.nn.functional as F
from fake_accelerator import FAKE, on_fake
from robustlearn import core, metrics, nets, data as D, balancing as B, xrm as X, mat as M, flow as FL
from robustlearn import discrete_flow as DF, mtp as MT, icl as I, icrm as R, u2c as U, recycling as RC
from robustlearn import mag as MG, viraal as V


def _params(model): return torch.cat([p.detach().cpu().flatten() for p in model.parameters()])

def _on(t, device) -> bool:
    "`t` lies on `device` (compared by kind: cuda:0 is cuda)."
    return torch.device(t.device).type == torch.device(device).type

def _exact(device) -> bool: return device.type in ("cpu", FAKE.type)   # the same CPU kernels

def _close(a, b, device, rtol=1e-3, atol=1e-4):
    a, b = (v.detach().cpu().double() if torch.is_tensor(v) else torch.tensor(np.array(v, dtype=float)) for v in (a, b))
    assert a.shape == b.shape
    assert torch.equal(a, b) if _exact(device) else torch.allclose(a, b, rtol=rtol, atol=atol), (a, b)

def _toy(seed=0):
    return D.make_linear_spurious(n_train=200, n_valid=100, n_test=100, d_noise=5, seed=seed)

def _linear(d): return torch.nn.Linear(d.x.shape[1], d.n_classes)

def _metrics(logits, y, g):
    "Every metric of `metrics` (and MAT's shift) on one set of inputs, as CPU numbers."
    probs = logits.softmax(1)
    return dict(acc=metrics.accuracy(logits, y), groups=metrics.group_accuracies(logits, y, g).cpu(),
                wga=metrics.worst_group_accuracy(logits, y, g), ece=metrics.expected_calibration_error(probs, y),
                nll=metrics.nll(logits, y), nse=metrics.normalized_squared_error(logits, probs, d=3),
                energy=metrics.energy_distance(logits, probs), shift=M.mat_shift(logits, y).cpu())

def _metric_inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(60, 3, generator=gen), torch.randint(0, 3, (60,), generator=gen), torch.randint(0, 4, (60,), generator=gen)

def _same_metrics(a, b, device):
    assert a.keys() == b.keys()
    for k in a: _close(a[k], b[k], device)


# --- faults that only an accelerator shows (issue 14, faults 1-4), on the fake accelerator -----------------------

def _resumable_run(path, steps, device, resume):
    core.set_seed(0)
    tr, _, _ = _toy()
    model = nets.MLP(tr.x.shape[1], 2, hidden=(16,), dropout=0.3)        # dropout: the generators' states matter
    core.fit(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (tr.x, tr.y), steps=steps, batch_size=32,
             device=device, checkpoint=path, checkpoint_every=5, resume=resume)
    return model

def test_resume_on_an_accelerator(fake, tmp_path):
    "fit(resume=True) on an accelerator: the checkpoint is read onto the CPU, where the generators' states must be."
    full = _resumable_run(tmp_path / "a.pt", 12, fake, False)
    _resumable_run(tmp_path / "b.pt", 7, fake, False)
    resumed = _resumable_run(tmp_path / "b.pt", 12, fake, True)
    assert on_fake(next(resumed.parameters()))
    assert torch.equal(_params(full), _params(resumed))

def test_generator_states_restore_from_any_device(fake):
    st, a = core.rng_state(), torch.rand(3)
    core.set_rng_state(core.to_device(st, FAKE))          # as torch.load(map_location=<accelerator>) returns them
    assert torch.equal(torch.rand(3), a)

def test_metrics_on_an_accelerator(fake):
    "Accumulators are made on the inputs' device, and labels follow the predictions."
    logits, y, g = _metric_inputs()
    ref = _metrics(logits, y, g)
    _same_metrics(_metrics(logits.to(FAKE), y.to(FAKE), g.to(FAKE)), ref, FAKE)
    _same_metrics(_metrics(logits.to(FAKE), y, g), ref, FAKE)                  # predictions there, labels here
    assert on_fake(M.mat_shift(logits.to(FAKE), y))

@pytest.mark.parametrize("method", B.METHODS)
def test_balancing_with_data_on_an_accelerator(fake, method):
    "A GroupDataset on the accelerator: weighted batches (rwy, rwg, gdro), evaluate and JTT's error set work."
    tr, va, te = _toy()
    hp = dict(epochs=2, batch_size=32, **(dict(T=1, up=3) if method == "jtt" else {}))
    ref = B.train_method(method, tr, va, hparams=hp, model_fn=_linear, device="cpu")
    run = B.train_method(method, tr.to(FAKE), va.to(FAKE), hparams=hp, model_fn=_linear, device=FAKE)
    assert on_fake(next(run.model.parameters()))
    assert torch.equal(_params(run.model), _params(ref.model)) and run.history.equals(ref.history)
    assert B.evaluate(run.model, te.to(FAKE)) == B.evaluate(ref.model, te)

def test_decoders_move_the_prompt_to_the_model(fake):
    torch.manual_seed(0)
    model = MT.MultiTokenGPT(12, n_heads=2, n_layer=2, d_model=16, block_size=16)
    prompt = torch.randint(0, 12, (5,))
    ref = MT.greedy_decode(model, prompt, 6)[0], MT.speculative_decode(model, prompt, 6, 2)[0]
    model.to(FAKE)
    out = MT.greedy_decode(model, prompt, 6)[0], MT.speculative_decode(model, prompt, 6, 2)[0]
    assert all(on_fake(o) and torch.equal(o.cpu(), r) for o, r in zip(out, ref))
    assert on_fake(MT.greedy_decode(model, prompt[None].expand(3, -1), 2)[0])

def test_flow_moves_x0_to_the_model(fake):
    torch.manual_seed(0)
    model, x = FL.VelocityMLP(2, hidden=16, depth=2), torch.randn(8, 2)
    ref = FL.sample(model, x, steps=4), FL.log_likelihood(model, x, steps=4)
    model.to(FAKE)
    out = FL.sample(model, x, steps=4), FL.log_likelihood(model, x, steps=4)
    assert all(on_fake(o) and torch.equal(o.cpu(), r) for o, r in zip(out, ref))

def test_sample_discrete_moves_the_model(fake):
    torch.manual_seed(0)
    model, path = DF.TokenMLP(4, 2, hidden=16, depth=1), DF.MixturePath(4)
    ref = DF.sample_discrete(model, path, 10, steps=5, generator=torch.Generator().manual_seed(0))
    out = DF.sample_discrete(model, path, 10, steps=5, generator=torch.Generator().manual_seed(0), device=FAKE)
    assert on_fake(next(model.parameters())) and on_fake(out) and torch.equal(out.cpu(), ref)


# --- the smoke suite: every chapter on --device --------------------------------------------------------------------

class _Stop(Exception): pass

def _stop(model): raise _Stop

TRAINERS = {   # name: (model factory, trainer taking the model, the device and fit's keyword arguments); 6 steps each
    "core": (lambda: nets.MLP(15, 2, hidden=(16,), dropout=0.3),
             lambda m, dev, **kw: core.fit(m, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (_toy()[0].x, _toy()[0].y),
                                           steps=6, batch_size=32, device=dev, progress=False, **kw)),
    "flow": (lambda: FL.VelocityMLP(2, hidden=16, depth=2),
             lambda m, dev, **kw: FL.train_flow(m, lambda n: D.sample_2d("moons", n), steps=6, batch_size=32,
                                                device=dev, progress=False, **kw)),
    "discrete_flow": (lambda: DF.TokenMLP(8, 2, hidden=16, depth=1),
                      lambda m, dev, **kw: DF.train_discrete_flow(m, lambda n: DF.checkerboard_tokens(n, 8), DF.MixturePath(8),
                                                                  steps=6, batch_size=32, device=dev, progress=False, **kw)),
    "mtp": (lambda: MT.MultiTokenGPT(20, n_heads=2, n_layer=2, d_model=16, block_size=16),
            lambda m, dev, **kw: MT.train_mtp(m, torch.randint(0, 20, (64, 16), generator=torch.Generator().manual_seed(0)),
                                              steps=6, batch_size=8, device=dev, progress=False, **kw)),
    "icl": (lambda: I.ICLTransformer(3, 8, n_layer=1, n_head=2, d_model=16),
            lambda m, dev, **kw: I.train_icl(m, d=3, n_points=7, steps=6, batch_size=8, device=dev, progress=False, **kw)),
    "icl_setmlp": (lambda: I.ICLSetMLP(3, None, hidden=16),
                   lambda m, dev, **kw: I.train_icl(m, d=3, n_points=7, steps=6, batch_size=8, device=dev, progress=False, **kw)),
    "icrm": (lambda: R.ICRMNet(3, 2, max_context=5, d_model=16, n_layer=1, hidden=16),
             lambda m, dev, **kw: R.train_icrm(m, R.make_mean_envs(4, 20, d=3), steps=6, batch_size=4, device=dev,
                                               progress=False, **kw)),
}

def _trained(name, device, **kw):
    core.set_seed(0)
    make, train = TRAINERS[name]
    model = make()
    return model, train(model, device, **kw)

@pytest.mark.parametrize("name", TRAINERS)
def test_train_checkpoint_and_resume(device, name, tmp_path):
    "Training on the device matches the CPU, and a run stopped at step 3 and resumed ends where an uninterrupted one does."
    model, hist = _trained(name, device)
    assert _on(next(model.parameters()), device)
    _, ref = _trained(name, "cpu")
    if name not in ("core", "flow", "discrete_flow") or _exact(device):   # those draw noise from the device's generator
        _close(hist.losses, ref.losses, device)
    with pytest.raises(_Stop):
        _trained(name, device, checkpoint=tmp_path / "run.pt", checkpoint_every=2, eval_fn=_stop, eval_every=3)
    resumed, rh = _trained(name, device, checkpoint=tmp_path / "run.pt", resume=True)
    assert _on(next(resumed.parameters()), device)
    _close(_params(resumed), _params(model), device)
    _close(rh.losses[2:], hist.losses[2:], device)

def test_metrics_pipeline(device):
    logits, y, g = _metric_inputs()
    _same_metrics(_metrics(logits.to(device), y.to(device), g.to(device)), _metrics(logits, y, g), device)
    assert _on(M.mat_shift(logits.to(device), y), device)

@pytest.mark.parametrize("method", B.METHODS)
def test_balancing_pipeline(device, method):
    tr, va, te = _toy()
    hp = dict(epochs=2, batch_size=32, **(dict(T=1, up=3) if method == "jtt" else {}))
    run = B.train_method(method, tr.to(device), va.to(device), hparams=hp, model_fn=_linear, device=device)
    ref = B.train_method(method, tr, va, hparams=hp, model_fn=_linear, device="cpu")
    assert _on(next(run.model.parameters()), device) and _on(next(run.model_at("average").parameters()), device)
    _close(_params(run.model), _params(ref.model), device)
    logits = B.predict(run.model, te.x.to(device))
    assert _on(logits, "cpu")                                            # predict returns CPU logits
    _close(logits, B.predict(ref.model, te.x), device)
    res = B.evaluate(run.model, te.to(device))
    assert 0 <= res["worst_group"] <= res["average"] <= 1

def test_xrm_and_mat_pipeline(device):
    tr, va, te = _toy()
    res = X.xrm(tr.to(device), va.to(device), steps=4, model_fn=_linear, device=device)
    ref = X.xrm(tr, va, steps=4, model_fn=_linear, device="cpu")
    assert all(_on(t, "cpu") for t in (res.heldout_logits, res.train_env, res.valid_env))
    _close(res.heldout_logits, ref.heldout_logits, device)
    if _exact(device): assert torch.equal(res.train_env, ref.train_env) and res.flip_rate == ref.flip_rate
    itr, iva = res.with_groups(tr.to(device), va.to(device))
    assert _on(itr.g, device) and itr.n_groups == 4
    prec, rec = X.minority_precision_recall(res.train_env, itr.g)
    assert 0 <= prec <= 1 and 0 <= rec <= 1
    run = M.mat(tr.to(device), va.to(device), heldout_logits=res.heldout_logits, steps=2, model_fn=_linear, device=device)
    mref = M.mat(tr, va, heldout_logits=ref.heldout_logits, steps=2, model_fn=_linear, device="cpu")
    assert _on(next(run.model.parameters()), device)
    _close(_params(run.model), _params(mref.model), device)

def test_flow_pipeline(device):
    model, _ = _trained("flow", device)
    cpu = copy.deepcopy(model).cpu()
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    for method in ("euler", "rk4"):
        out = FL.sample(model, x0, steps=5, method=method)
        assert _on(out, device)
        _close(out, FL.sample(cpu, x0, steps=5, method=method), device)
    ll = FL.log_likelihood(model, x0, steps=5)
    assert _on(ll, device)
    _close(ll, FL.log_likelihood(cpu, x0, steps=5), device)
    hu = FL.log_likelihood(model, x0, steps=5, divergence="hutchinson", generator=torch.Generator().manual_seed(2))
    _close(hu, FL.log_likelihood(cpu, x0, steps=5, divergence="hutchinson", generator=torch.Generator().manual_seed(2)), device)
    fld = FL.GaussianPathField(torch.tensor([1., -1.]), torch.tensor([0.5, 2.])).to(device)   # buffers only
    _close(FL.sample(fld, x0, steps=5), FL.sample(fld.cpu(), x0, steps=5), device)

def test_discrete_flow_pipeline(device):
    model, _ = _trained("discrete_flow", device)
    cpu, path = copy.deepcopy(model).cpu(), DF.MixturePath(8)
    out = DF.sample_discrete(model, path, 64, steps=6, generator=torch.Generator().manual_seed(0))
    ref = DF.sample_discrete(cpu, path, 64, steps=6, generator=torch.Generator().manual_seed(0))
    assert _on(out, device)
    agree = (out.cpu() == ref).float().mean().item()
    assert agree == 1.0 if _exact(device) else agree >= 0.9
    assert 0 <= DF.total_variation(out, DF.checkerboard_target(8)) <= 1
    traj = DF.sample_discrete(model, path, 4, steps=3, return_trajectory=True)
    assert _on(traj, "cpu") and traj.shape == (4, 4, 2)              # the trajectory comes back on the CPU

def test_mtp_pipeline(device):
    model, _ = _trained("mtp", device)
    cpu = copy.deepcopy(model).cpu()
    prompts = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(1))
    greedy, _ = MT.greedy_decode(model, prompts, 8)
    assert _on(greedy, device)
    agree = (greedy.cpu() == MT.greedy_decode(cpu, prompts, 8)[0]).float().mean().item()
    assert agree == 1.0 if _exact(device) else agree >= 0.9
    for p, g in zip(prompts, greedy):             # exactly greedy's tokens, up to near-ties on a GPU's kernels
        s, st = MT.speculative_decode(model, p, 8, 2)
        assert _on(s, device) and st["forwards"] <= 8 + 1
        assert torch.equal(s, g) if _exact(device) else (s == g).float().mean() >= 0.9
    gen = torch.Generator().manual_seed(2)
    tokens, mask = torch.randint(0, 20, (8, 16), generator=gen), torch.rand(8, 16, generator=gen) < 0.5
    for f, args in ((MT.induction_accuracy, (tokens, mask)), (MT.exact_match, (tokens, tokens))):
        _close(f(model, *args), f(cpu, *args), device, atol=0.05)

@pytest.mark.parametrize("name", ["icl", "icl_setmlp"])
def test_icl_pipeline(device, name):
    model, _ = _trained(name, device)
    cpu = copy.deepcopy(model).cpu()
    for shift in ("none", "orthant"):
        c = I.error_curve(model, 3, 7, shift=shift, n_prompts=20, n_boot=20)
        _close(c.nse.to_numpy(), I.error_curve(cpu, 3, 7, shift=shift, n_prompts=20, n_boot=20).nse.to_numpy(), device)
    assert _on(next(model.parameters()), device)

def test_icrm_pipeline(device):
    model, _ = _trained("icrm", device)
    cpu, envs = copy.deepcopy(model).cpu(), R.make_mean_envs(3, 30, d=3, seed=5)
    _close(R.context_curve(model, envs, (0, 2, 5)).accuracy.to_numpy(),
           R.context_curve(cpu, envs, (0, 2, 5)).accuracy.to_numpy(), device, atol=0.05)
    erm, _ = _trained("icrm", device)                   # ERM: sequences of one example
    R.train_icrm(erm, R.make_mean_envs(4, 20, d=3), length=1, steps=2, batch_size=12, device=device, progress=False)
    assert _on(next(erm.parameters()), device)

@pytest.mark.parametrize("score", U.SCORES)
def test_u2c_pipeline(device, score):
    cfg = U.U2CExperiment.preset("quick", steps=20, tau_steps=30, hidden=(16,))
    flt = U.digits_features(cfg, seed=0, device=device)                 # trains on the device, returns CPU tensors
    on = {k: tuple(t.to(device) for t in v) for k, v in flt.items()}
    table, pieces = U.rc_vs_u2c(on["valid"], on["test_in"], on["test_ood"], score, train=on["train"], tau_steps=30)
    cpu_table, _ = U.rc_vs_u2c(flt["valid"], flt["test_in"], flt["test_ood"], score, train=flt["train"], tau_steps=30)
    cols = ["error", "ece", "nll", "abstain_in", "abstain_ood", "auroc", "fpr95"]
    _close(table[cols].to_numpy(), cpu_table[cols].to_numpy(), device, atol=1e-3)
    assert _on(pieces["methods"]["U2C"].predict_proba(on["test_in"][1], pieces["u_test"][:len(on["test_in"][1])]), device)

def test_recycling_pipeline(device):
    "Model recycling at tiny sizes: fine-tunes on the device, results on the CPU, the same numbers as the CPU's."
    _, aux_pool, domains = RC.make_digit_domains(seed=0)
    tasks = dict(list(RC.digit_aux_tasks(aux_pool, "shift").items())[:1])
    def go(dev):
        torch.manual_seed(0)
        return RC.recycle(nets.MLP(64, 10, (16,)), tasks, domains, n_runs=2, test_domain="shift", steps=6, head_steps=2,
                          aux_steps=3, probe_steps=3, eval_every=3, device=dev, progress=False)
    res, ref = go(device), go("cpu")
    assert all(_on(p, "cpu") for p in res.methods["ratatouille_uniform"]["model"].parameters())
    _close(res.table().to_numpy(), ref.table().to_numpy(), device, atol=5.0)      # accuracies in %
    avg = RC.average_weights([copy.deepcopy(r.model).to(device) for r in res.vanilla])
    assert _on(next(avg.parameters()), device)
    c, b = RC.interpolation_curve(res.vanilla[0].model.to(device), res.vanilla[1].model.to(device), res.test_data.to(device), (0, 0.5, 1))
    assert len(c) == 3 and b >= 0


def test_mag_pipeline(device):
    "MAG at tiny sizes: every method trains on the device and gives the CPU's numbers; the attacker and timing run there."
    cfg = MG.MAGExperiment(n_train=100, n_test=30, warmup_steps=3, steps=3, mlm_steps=2, attack_steps=2, batch_size=16,
                           emb_dim=8, hidden=8, lm_hidden=8)
    res, ref = MG.run_mag(cfg, seed=0, methods=MG.METHODS, device=device), MG.run_mag(cfg, seed=0, methods=MG.METHODS, device="cpu")
    cols = ["token_acc", "exact", "bleu"]
    _close(res["table"][cols].to_numpy(), ref["table"][cols].to_numpy(), device, atol=1e-3)
    assert _on(next(res["models"]["mag"].parameters()), device) and _on(res["test"][0], device)
    sv = res["vocabs"][0]
    att = MG.train_attacker(cfg, res["models"]["plain"], res["lm"], res["train"], sv, device=device)
    assert set(MG.attack_damage(res["models"]["plain"], att, *res["test"], sv)) == {"generator", "uniform"}
    t = MG.time_perturbations(res["models"]["plain"], res["lm"], res["train"], sv, n=2, batch_size=8)
    assert len(t["advgen"]) == 2

def test_viraal_pipeline(device):
    "VirAAL at tiny sizes: CE and VAT + entropy acquisition on the device, the CPU's numbers."
    cfg = V.VirAALConfig.preset("quick", pool=200, test=60, steps=4)
    a = V.viraal_runs(cfg, seed=0, device=device, runs=["ce@2", "vat+entropy@4"])
    b = V.viraal_runs(cfg, seed=0, device="cpu", runs=["ce@2", "vat+entropy@4"])
    _close(a[["intent_acc", "slot_f1"]].to_numpy(), b[["intent_acc", "slot_f1"]].to_numpy(), device, atol=1.0)
