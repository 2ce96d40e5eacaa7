"In-context regression and ICRM: baselines against closed forms, shifts, causality, bad inputs, determinism, claims."
import numpy as np, pytest, torch
from robustlearn import core, icl as I, icrm as R
from robustlearn.claims import run_claims


def test_least_squares_and_ridge_match_closed_forms():
    xs, ys, w = I.sample_prompts(5, 12, 4, generator=torch.Generator().manual_seed(0))
    ls = I.baseline_predict("least_squares", xs, ys)
    rd = I.baseline_predict("ridge", xs, ys)
    for b in range(5):
        for k in (2, 6, 11):
            X, y, q = xs[b, :k].double(), ys[b, :k].double(), xs[b, k].double()
            assert abs(ls[b, k].item() - (q @ torch.linalg.pinv(X) @ y).item()) < 1e-4
            wr = torch.linalg.solve(X.T @ X + 0.1 * torch.eye(4, dtype=torch.float64), X.T @ y)
            assert abs(rd[b, k].item() - (q @ wr).item()) < 1e-4
    assert torch.allclose(ls[:, 4:], ys[:, 4:], atol=1e-3)       # noise-free: exact from k = d on


def test_lasso_recovers_sparse_weights():
    xs, ys, w = I.sample_prompts(10, 30, 8, task="sparse", sparsity=1, generator=torch.Generator().manual_seed(1))
    err = ((I.baseline_predict("lasso", xs, ys) - ys) ** 2)[:, 20:].mean() / 8
    lsq = ((I.baseline_predict("least_squares", xs, ys) - ys) ** 2)[:, 2:6].mean() / 8
    assert err < 0.01 and lsq > err


@pytest.mark.parametrize("shift", I.SHIFTS)
def test_every_shift_gives_a_curve(shift):
    c = I.error_curve("averaging", 3, 7, shift=shift, n_prompts=30, n_boot=50)
    assert len(c) == 7 and np.isfinite(c.nse).all() and (c.lo <= c.hi).all()


def test_shift_statistics():
    g = torch.Generator().manual_seed(0)
    x0, _, _ = I.sample_prompts(3000, 2, 4, generator=g)
    x2, _, _ = I.sample_prompts(3000, 2, 4, shift="x_scale", scale=2.0, generator=g)
    assert abs(x2.std() / x0.std() - 2) < 0.05
    _, y1, _ = I.sample_prompts(3000, 2, 4, shift="noise", generator=torch.Generator().manual_seed(3))
    _, y0, _ = I.sample_prompts(3000, 2, 4, generator=torch.Generator().manual_seed(3))
    assert abs((y1 - y0).std().item() - 1) < 0.05


def test_models_are_causal_and_deterministic():
    xs, ys, _ = I.sample_prompts(4, 9, 3, generator=torch.Generator().manual_seed(0))
    for make in (lambda: I.ICLTransformer(3, max_points=9, n_layer=2, d_model=32), lambda: I.ICLSetMLP(3, hidden=32)):
        torch.manual_seed(0)
        net = make()
        out = net(xs, ys)
        xs2 = xs.clone(); xs2[:, 5:] += 3.0
        assert torch.allclose(net(xs2, ys)[:, :5], out[:, :5], atol=1e-6)
        hs = []
        for _ in range(2):
            torch.manual_seed(0)
            hs.append(I.train_icl(make(), d=3, n_points=9, steps=4, batch_size=8, device="cpu", progress=False).losses)
        assert hs[0] == hs[1]


@pytest.mark.parametrize("call,message", [
    (lambda: I.ICLTransformer(5, max_points=10)(torch.zeros(2, 11, 5), torch.zeros(2, 11)), "exceed the model's context of 10"),
    (lambda: I.ICLTransformer(5, max_points=10)(torch.zeros(2, 4, 3), torch.zeros(2, 4)), "built for d=5"),
    (lambda: I.ICLSetMLP(5)(torch.zeros(2, 4, 5), torch.zeros(2, 5)), "xs must be (B, N, d) and ys (B, N)"),
    (lambda: I.train_icl(I.ICLSetMLP(5), d=4, n_points=5, steps=1), "built for d=5, not d=4"),
    (lambda: I.error_curve("least_squares", 3, 5, shift="rotation"), "unknown shift 'rotation'"),
    (lambda: I.sample_prompts(2, 3, 4, task="quadratic"), "task must be 'linear' or 'sparse'"),
    (lambda: I.sample_prompts(2, 3, 4, d_active=6), "d_active must be in [1, 4]"),
    (lambda: I.baseline_predict("knn", torch.zeros(1, 3, 2), torch.zeros(1, 3)), "unknown baseline 'knn'"),
    (lambda: R.ICRMNet(4, 2, max_context=5)(torch.zeros(1, 7, 4)), "context of 6 examples exceeds the trained context (5)"),
    (lambda: R.ICRMNet(4, 2)(torch.zeros(1, 3, 5)), "xs must be (B, L, 4)"),
    (lambda: R.context_curve(R.ICRMNet(4, 2, max_context=5), R.make_mean_envs(2, 20, d=4), (0, 10)), "context size 10 exceeds"),
    (lambda: R.context_curve(R.ICRMNet(4, 2, max_context=5), R.make_mean_envs(2, 20, d=4), (0, 2.5)), "contexts must be non-negative ints"),
    (lambda: R.context_curve(R.ICRMNet(4, 2, max_context=5), [], (0, 2)), "envs is empty"),
    (lambda: R.env_batches(R.make_mean_envs(2, 20, d=4), 30, 2), "length 30 exceeds the smallest environment"),
    (lambda: R.icrm_task(R.ICRMExperiment(task="colours")), "task must be 'means' or 'digits'"),
    (lambda: R.train_icrm(R.ICRMNet(4, 2, max_context=5), R.make_mean_envs(2, 20, d=4), length=9, steps=1), "exceeds the model's context"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError) as e: call()
    assert message in str(e.value)


def test_icrm_zero_context_is_a_function_of_the_example_alone():
    torch.manual_seed(0)
    net = R.ICRMNet(4, 2, max_context=8, d_model=16, hidden=16).eval()
    x = torch.randn(5, 9, 4)
    alone = net(x[:, :1])[:, 0]
    assert torch.allclose(net(x)[:, 0], alone, atol=1e-6)
    envs = R.make_mean_envs(3, 30, d=4)
    c = R.context_curve(net, envs, (0, 8))
    qx = torch.cat([x[8:] for x, _ in envs]); qy = torch.cat([y[8:] for _, y in envs])
    acc0 = (net(qx[:, None])[:, 0].argmax(-1) == qy).float().mean().item()
    assert abs(c.accuracy[0] - acc0) < 1e-6      # float32 mean vs exact fraction


def test_icrm_training_is_deterministic():
    envs = R.make_mean_envs(5, 30, d=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(R.train_icrm(R.ICRMNet(3, 2, max_context=9, d_model=16), envs, steps=4, device="cpu", progress=False).losses)
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_icl_claims_as_the_chapter_states():
    "Seed 0 at one thread, as `reproduce` runs it and the chapter states (about 4 minutes): three claims hold, the transformer misses 0.1."
    df = run_claims(["icl"], quick=True, seeds=(0,), device="cpu", threads=1).set_index("claim")
    holds = ["icl.setmlp_lags", "icl.shift_resilience", "icl.severe_shift_breaks_both"]
    assert (df.loc[holds, "verdict"] == "holds").all(), df[["detail"]].to_string()
    tf = df.loc["icl.transformer_tracks_ols", "values"]["tf_d_2d"]
    assert df.loc["icl.transformer_tracks_ols", "verdict"] == "fails" and tf > 0.1, df[["detail"]].to_string()


@pytest.mark.slow
def test_icrm_claim_holds_two_seeds():
    df = run_claims(["icrm.context_helps"], quick=True, seeds=(0, 1), device="cpu", threads=2)
    assert (df.verdict == "holds").all(), df[["claim", "detail"]].to_string()


@pytest.mark.slow
def test_icrm_digits_claim_as_the_chapter_states():
    "On rotated digits the context helps, but less than the claim asks (seed 0: ERM 0.336, ICRM at 25/50 0.297)."
    df = run_claims(["icrm.context_helps_digits"], quick=True, seeds=(0,), device="cpu", threads=2)
    m = df["values"].iloc[0]
    assert m["icrm_25plus"] < m["erm"] and df.verdict.iloc[0] == "fails", df[["claim", "detail"]].to_string()


def test_icrm_context_figure_draws_bayes_lines_only_for_the_means_task():
    import pandas as pd
    r = dict(curve=pd.DataFrame(dict(context=[0, 5], error=[0.3, 0.2])), erm_error=0.3)
    lines = lambda task: [l.get_label() for l in R._context_figure(r, R.ICRMExperiment(task=task)).axes[0].lines]
    assert sum("Bayes" in l for l in lines("means")) == 2
    assert not any("Bayes" in l for l in lines("digits"))


def test_sample_prompts_follows_the_global_seed():
    "Without a generator, prompts come from torch's global generator: set_seed changes them (it used to be a fixed seed 0)."
    draw = lambda seed: (core.set_seed(seed), I.sample_prompts(3, 4, 2)[0])[1]
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


class _Spy(torch.nn.Module):
    "An in-context regressor that remembers the prompts it is shown."
    def __init__(self, d):
        super().__init__()
        self.d, self.max_points, self.w, self.seen = d, None, torch.nn.Parameter(torch.zeros(1)), []
    def forward(self, xs, ys):
        self.seen.append(xs.detach().cpu()); return self.w * xs.sum(-1)


def test_training_batches_never_reuse_the_test_prompts(tmp_path):
    "Seed 0's batch at step 10,000 (the full preset trains 100,000 steps) is not error_curve's test set, x for x."
    spy = _Spy(3)
    core.save_checkpoint(tmp_path / "run.pt", spy, torch.optim.AdamW(spy.parameters()), step=10_000,
                         history=dict(losses=[], evals=[]))
    I.train_icl(spy, d=3, n_points=5, steps=10_001, batch_size=4, seed=0, device="cpu", progress=False,
                checkpoint=tmp_path / "run.pt", resume=True)           # runs step 10,000 only
    train_x = spy.seen[-1]
    I.error_curve(spy, 3, 5, n_prompts=4, seed=0, n_boot=10)
    assert not torch.equal(train_x, spy.seen[-1])


class _AllPositions(torch.nn.Module):
    "A baseline posing as a model: error_curve then predicts every position of every shifted prompt, as it used to."
    def __init__(self, name):
        super().__init__()
        self.name, self.w = name, torch.nn.Parameter(torch.zeros(1))
    def forward(self, xs, ys): return I.baseline_predict(self.name, xs, ys)


@pytest.mark.parametrize("shift", I.QUERY_SHIFTS)
def test_query_shifts_fit_each_position_once(shift, monkeypatch):
    "Under a query shift a baseline is fitted once per prompt and position, not once per position for every k."
    ref = I.error_curve(_AllPositions("ridge"), 3, 6, shift=shift, n_prompts=5, n_boot=10)
    fits, real = [], I._fit_predict
    monkeypatch.setattr(I, "_fit_predict", lambda *a: fits.append(1) or real(*a))
    c = I.error_curve("ridge", 3, 6, shift=shift, n_prompts=5, n_boot=10)
    assert len(fits) == 5 * 6
    assert np.array_equal(c.nse.to_numpy(), ref.nse.to_numpy())


def test_env_batches_draw_all_indices_at_once(monkeypatch):
    "A batch costs the same few random draws whatever its size (ERM's has 816 sequences); the sampling rules hold."
    envs = R.make_mean_envs(3, 20, d=3, seed=0) + [(x[:12], y[:12]) for x, y in R.make_mean_envs(1, 20, d=3, seed=1)]
    draws = []
    for name in ("randperm", "randint", "rand", "multinomial"):
        monkeypatch.setattr(torch, name, lambda *a, _f=getattr(torch, name), **k: draws.append(name) or _f(*a, **k))
    counts = []
    for batch_size in (4, 64):
        draws.clear(); R.env_batches(envs, 10, batch_size)(0); counts.append(len(draws))
    assert counts[0] == counts[1]
    monkeypatch.undo()
    xs, ys = R.env_batches(envs, 10, 64, seed=3)(7)
    where = {tuple(r.tolist()): (e, i) for e, (x, _) in enumerate(envs) for i, r in enumerate(x)}
    for b in range(64):
        hits = [where[tuple(r.tolist())] for r in xs[b]]
        assert len({e for e, _ in hits}) == 1 and len({i for _, i in hits}) == 10   # one environment, no repeats
        assert ys[b].tolist() == [envs[e][1][i].item() for e, i in hits]
    assert torch.equal(R.env_batches(envs, 10, 64, seed=3)(7)[0], xs)


def test_fixed_prompts_are_reused_every_epoch():
    "prompts=N: every step draws from the same N prompts (iclmlp's protocol), each epoch once; fresh prompts never repeat."
    spy = _Spy(3)
    I.train_icl(spy, d=3, n_points=5, steps=6, batch_size=4, prompts=8, seed=0, device="cpu", progress=False)
    rows = [tuple(p.flatten().tolist()) for b in spy.seen for p in b]
    assert len(rows) == 24 and len(set(rows)) == 8                             # 3 epochs over 8 prompts
    for e in range(3): assert len(set(rows[8 * e:8 * e + 8])) == 8             # each epoch sees each prompt once
    spy2 = _Spy(3)
    I.train_icl(spy2, d=3, n_points=5, steps=6, batch_size=4, seed=0, device="cpu", progress=False)
    assert len({tuple(p.flatten().tolist()) for b in spy2.seen for p in b}) == 24
    with pytest.raises(ValueError, match="curriculum or prompts, not both"):
        I.train_icl(spy, d=3, n_points=5, steps=1, prompts=8, curriculum=I.Curriculum(3, 5))


def test_excess_error_is_relative_to_least_squares_on_the_same_prompts():
    c = {w: I.error_curve(w, 3, 7, n_prompts=100, n_boot=10) for w in ("least_squares", "averaging", "3nn")}
    ex = I.excess_error(c, 3)
    for w in ("averaging", "3nn"):
        assert np.isclose(ex[w], (c[w].nse - c["least_squares"].nse)[1:7].mean())
    assert ex["averaging"] > 0 and "least_squares" not in ex
    # under w scaled by 3 every linear-in-y predictor's error grows by exactly 9: its excess too
    s = {w: I.error_curve(w, 3, 7, n_prompts=100, n_boot=10, shift="w_scale", scale=3.0) for w in ("least_squares", "averaging")}
    assert np.isclose(I.excess_error(s, 3)["averaging"], 9 * ex["averaging"], rtol=1e-4)


def test_excess_error_bad_inputs():
    c = {"averaging": I.error_curve("averaging", 3, 7, n_prompts=20, n_boot=5)}
    with pytest.raises(ValueError, match="needs a 'least_squares' curve"): I.excess_error(c, 3)
    c["least_squares"] = I.error_curve("least_squares", 3, 7, n_prompts=20, n_boot=5)
    with pytest.raises(ValueError, match="needs k = 0..2d"): I.excess_error(c, 5)


def test_icl_models_caps_the_warmup_per_learner():
    "Each learner on fresh prompts warms up for at most its own steps (a 5-step set-MLP beside a 20-step transformer)."
    cfg = I.ICLExperiment.preset(True, steps=20, setmlp_steps=5, setmlp_prompts=None, n_layer=1, d_model=16,
                                 setmlp_hidden=16, setmlp_d_set=16, n_prompts=20)
    out = I.icl_models(cfg, device="cpu")
    assert out["protocol"]["transformer"].endswith("20 steps, warm-up 20, clipping 1.0"), out["protocol"]
    assert out["protocol"]["setmlp"].endswith("5 steps, warm-up 5, clipping 1.0"), out["protocol"]
    assert len(out["setmlp"][1].losses) == 5


def test_fit_refuses_a_non_positive_grad_clip():
    "A negative clip norm would flip the gradient's sign inside clip_grad_norm_; fit says so instead."
    from robustlearn.core import fit
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="grad_clip must be a positive norm"):
            fit(I.ICLSetMLP(3, hidden=8), lambda m, b: m(*b).sum(), lambda s: (torch.randn(2, 4, 3), torch.randn(2, 4)),
                steps=1, grad_clip=bad, device="cpu", progress=False)


def test_context_curve_shares_the_context_as_a_cache():
    "Each query scored after the context's cached keys and values: the same logits as the full sequence (context, query)."
    torch.manual_seed(0)
    net = R.ICRMNet(4, 3, max_context=8).eval()
    with torch.no_grad():                               # a less uniform net than the init, so argmaxes are not ties
        for p in net.parameters(): p.mul_(20)
    envs = R.make_mean_envs(3, 30, d=4, spread=2.0, seed=1)
    right = {c: 0 for c in (0, 1, 4, 8)}
    for x, y in envs:
        for c in right:
            seq = torch.cat([x[:c].expand(22, c, 4), x[8:, None]], 1)          # (Q, c + 1, d): the context, then one query
            full = net(seq)[:, -1]
            kv = R.KVCache()
            if c: net(x[None, :c], cache=kv); kv.expand(22)
            torch.testing.assert_close(net(x[8:, None], cache=kv)[:, -1], full, atol=1e-4, rtol=1e-4)
            right[c] += (full.argmax(-1) == y[8:]).sum().item()
    curve = R.context_curve(net, envs, tuple(right))
    np.testing.assert_allclose(curve.accuracy, [right[c] / (3 * 22) for c in right])
    with pytest.raises(ValueError, match="batch size 1"):
        kv.expand(5)                                     # already expanded to 22 rows
    with pytest.raises(ValueError, match="a context of 10 examples exceeds"):
        net(x[None, :2], cache=kv)                       # 9 positions seen (8 + a query) + 2 > the context of 8 + 1


@pytest.mark.parametrize("batch", [0, -1, 2.0, True])
def test_kv_cache_expand_refuses_a_bad_batch(batch):
    "expand(-1) would keep the batch of 1 silently (torch reads -1 as 'unchanged')."
    with pytest.raises(ValueError, match="batch must be a positive int"):
        R.KVCache().expand(batch)
