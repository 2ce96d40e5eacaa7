"XRM and MAT: the math, bad inputs, determinism and the papers' claims."
import numpy as np, pytest, torch
import torch.nn.functional as F
from robustlearn import xrm as X, mat as M
from robustlearn.claims import run_claims
from robustlearn.data import GroupDataset, make_linear_spurious, make_spurious_digits

@pytest.fixture(scope="module")
def digits():
    return make_spurious_digits(0.95, style="frame", seed=0)

@pytest.fixture(scope="module")
def xrm_run(digits):
    tr, va, _ = digits
    return X.xrm(tr, va, steps=60, seed=1, device="cpu")

def test_class_balanced_ce_matches_definition():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(30, 3, generator=g), torch.randint(0, 3, (30,), generator=g)
    ref = sum(F.cross_entropy(logits[y == k], y[y == k]) for k in range(3) if (y == k).any())
    assert torch.isclose(X.class_balanced_ce(logits, y), ref)

def test_flip_probability_bounds():
    p = torch.softmax(torch.randn(100, 4), 1)
    f = X.flip_probability(p)
    assert ((f >= 0) & (f <= 1)).all()
    assert torch.allclose(X.flip_probability(torch.full((2, 4), 0.25)), torch.zeros(2))

def test_heldout_logits_come_from_the_other_twin(xrm_run, digits):
    tr = digits[0]
    a, b = (t(tr.x).detach() for t in xrm_run.twins)
    expected = torch.where(xrm_run.in_a[:, None], b, a)
    assert torch.allclose(xrm_run.heldout_logits, expected, atol=1e-5)
    assert torch.equal(xrm_run.environments(tr), xrm_run.train_env)

def test_xrm_is_deterministic(digits, xrm_run):
    tr, va, _ = digits
    again = X.xrm(tr, va, steps=60, seed=1, device="cpu")
    assert torch.equal(again.train_env, xrm_run.train_env) and again.flip_rate == xrm_run.flip_rate
    assert torch.equal(again.heldout_logits, xrm_run.heldout_logits)

def test_flips_accumulate_and_twins_start_identical(digits):
    tr, va, _ = digits
    r = X.xrm(tr, va, steps=1, seed=0, device="cpu")
    assert r.flip_rate == [0.0]           # zero last layer: uniform held-out prediction, flip probability 0
    assert len(X.xrm(tr, va, steps=40, seed=0, device="cpu").flip_rate) == 40

def test_degenerate_run_is_reported():
    # no spurious feature, a perfectly separable core: both twins are right everywhere, no class splits
    tr, va, _ = make_linear_spurious(n_train=200, n_valid=50, n_test=50, d_noise=0, spurious_rate=0.5,
                                     core_std=0.01, spurious_std=1.0, seed=0)
    r = X.xrm(tr, va, steps=100, seed=0, device="cpu")
    assert r.degenerate and r.train_env.sum() == 0

def test_with_groups_feeds_balancing(xrm_run, digits):
    tr, va, _ = digits
    itr, iva = xrm_run.with_groups(tr, va)
    assert itr.n_groups == 4 and torch.equal(itr.g, 2 * tr.y + xrm_run.train_env)

def test_sweep_picks_largest_flip_rate(digits):
    tr, va, _ = digits
    runs = [X.xrm(tr, va, steps=30, hparams=X.sample_xrm_hparams(i), seed=0, device="cpu") for i in range(2)]
    best = X.xrm_sweep(tr, va, 2, steps=30, seed=0, device="cpu")
    assert best.final_flip_rate == max(r.final_flip_rate for r in runs)

def test_mat_shift_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    logits, y, tau = torch.randn(25, 3, generator=g), torch.randint(0, 3, (25,), generator=g), 0.7
    p = torch.softmax(logits.double() / tau, 1).numpy()
    joint = np.zeros((3, 3))                         # [yhat, y]
    for i in range(25): joint[:, y[i]] += p[i]
    cond = joint / joint.sum(1, keepdims=True)
    ref = np.log(np.array([[sum(p[i, h] * cond[h, c] for h in range(3)) for c in range(3)] for i in range(25)]) + 1e-6)
    assert np.allclose(M.mat_shift(logits, y, tau).numpy(), ref, atol=1e-5)

def test_mat_gradient_is_that_of_shifted_cross_entropy():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2, bias=False)
    x, y, s = torch.randn(6, 4), torch.randint(0, 2, (6,)), torch.randn(6, 2)
    loss = F.cross_entropy(lin(x) + s, y); loss.backward()
    p = torch.softmax(lin(x) + s, 1).detach()
    manual = ((p - F.one_hot(y, 2)).T @ x) / 6       # d/dW of the mean cross-entropy
    assert torch.allclose(lin.weight.grad, manual, atol=1e-6)

BAD = [
    ("single-class", lambda d: X.xrm(d[0].subset(d[0].y == 1), d[1], steps=2), ValueError, "at least two classes"),
    ("too-few-per-twin", lambda d: X.xrm(d[0].subset(torch.cat([(d[0].y == 0).nonzero()[:1, 0], (d[0].y == 1).nonzero()[:1, 0]])), d[1], steps=2), ValueError, "two training examples per twin"),
    ("shapes", lambda d: X.xrm(d[0], GroupDataset(torch.zeros(2, 7), torch.tensor([0, 1])), steps=2), ValueError, "differ in shape"),
    ("steps", lambda d: X.xrm(d[0], d[1], steps=-5), ValueError, "steps must be a positive int"),
    ("batch-size", lambda d: X.xrm(d[0], d[1], steps=1, batch_size=0), ValueError, "batch_size must be None (full batch) or an int >= 2"),
    ("optimizer", lambda d: X.xrm(d[0], d[1], steps=1, hparams=dict(optimizer="lbfgs")), ValueError, "unknown optimizer"),
    ("tau-zero", lambda d: M.mat(d[0], d[1], tau=0.0), ValueError, "tau must be a positive number"),
    ("tau-negative-shift", lambda d: M.mat_shift(torch.zeros(3, 2), torch.tensor([0, 1, 0]), tau=-2), ValueError, "tau must be"),
    ("heldout-shape", lambda d: M.mat(d[0], d[1], heldout_logits=torch.zeros(3, 2)), ValueError, "heldout_logits must have shape"),
    ("shift-labels", lambda d: M.mat_shift(torch.zeros(2, 2), torch.tensor([0, 2])), ValueError, "labels must be in [0, 2)"),
    ("problem-size", lambda d: M.make_memorization_problem(n=2), ValueError, "n must be an int of at least 4"),
]

@pytest.mark.parametrize("call,exc,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, fragment, digits):
    with pytest.raises(exc) as info:
        call(digits)
    assert fragment in str(info.value)

def test_claims_at_seed_0():
    "XRM's and MAT's claims at the quick preset, seed 0 (three-seed verdicts are `make reproduce`'s job)."
    df = run_claims(["xrm", "mat"], quick=True, seeds=(0,), device="cpu", threads=2).set_index("claim")
    assert len(df) == 5
    clean = df.loc[["xrm.finds_minority", "xrm.matches_oracle_groups", "mat.beats_erm"]]
    assert (clean.verdict == "holds").all(), clean[["measured", "detail"]].to_string()
    # the harder setting, as the chapter states it: XRM's environment 1 is no longer the minority (seed 0: precision 0.51),
    # and gDRO with its groups falls far below gDRO with the true groups (seed 0: 5.9 vs 40.3)
    hard, oracle = df.loc["xrm.finds_minority_harder", "values"], df.loc["xrm.matches_oracle_groups_harder", "values"]
    assert hard["precision"] < 0.6 <= hard["recall"], hard                      # environment 1 mixes majority examples in
    assert oracle["gdro_true"] - oracle["gdro_xrm"] > 10, oracle
    assert (df.loc[["xrm.finds_minority_harder", "xrm.matches_oracle_groups_harder"]].verdict == "fails").all()

def test_mat_with_its_defaults_beats_erm():
    "mat(train, valid) with nothing set (default MLP, SGD twins) beats ERM's worst group on the interpretable problem."
    from robustlearn.mat import make_memorization_problem, mat
    from robustlearn.balancing import train_method, evaluate
    tr, va, te = make_memorization_problem(seed=0)
    erm = evaluate(train_method("erm", tr, va, seed=0, device="cpu", progress=False).model_at("worst_group"), te)["worst_group"]
    ours = evaluate(mat(tr, va, seed=0, device="cpu", progress=False).model_at("worst_group"), te)["worst_group"]
    assert ours >= erm + 0.2, (ours, erm)          # measured: 0.536 vs 0.178

def test_mat_warns_about_adaptive_twins():
    from robustlearn.mat import make_memorization_problem, mat
    tr, va, _ = make_memorization_problem(n=40, dim=20, seed=0)
    with pytest.warns(UserWarning, match="adaptive optimizer"):
        mat(tr, va, steps=1, xrm_steps=2, xrm_hparams=dict(optimizer="adam"), device="cpu", progress=False)

def _fake_result(train_env, flip):
    n = len(train_env)
    return X.XRMResult(train_env=train_env, valid_env=torch.zeros(4, dtype=torch.long), heldout_logits=torch.zeros(n, 2),
                       in_a=torch.zeros(n, dtype=torch.bool), flip_rate=[flip],
                       degenerate=bool(any(len(train_env[torch.arange(n) % 2 == k].unique()) < 2 for k in (0, 1))))

def test_degenerate_runs_are_refused_and_avoided(monkeypatch):
    from robustlearn.data import GroupDataset
    tr = GroupDataset(torch.randn(8, 3), torch.arange(8) % 2); va = GroupDataset(torch.randn(4, 3), torch.arange(4) % 2)
    bad = _fake_result(torch.tensor([1, 0, 1, 1, 1, 0, 1, 1]), flip=0.9)          # class 0 all in environment 1
    good = _fake_result(torch.tensor([1, 0, 0, 1, 0, 0, 0, 0]), flip=0.2)
    assert bad.degenerate and not good.degenerate
    with pytest.raises(ValueError, match=r"class\(es\) \[0\] did not split"): bad.with_groups(tr, va)
    assert bad.with_groups(tr, va, allow_degenerate=True)[0].n_groups == 4
    runs = iter([bad, good])
    monkeypatch.setattr(X, "xrm", lambda *a, **k: next(runs))
    assert X.xrm_sweep(tr, va, n_hparams=2) is good                                # despite its lower flip rate
