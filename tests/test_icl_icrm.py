"In-context regression and ICRM: baselines against closed forms, shifts, causality, bad inputs, determinism, claims."
import numpy as np, pytest, torch
from robustlearn import icl as I, icrm as R
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
def test_icl_claims_hold_two_seeds():
    df = run_claims(["icl"], quick=True, seeds=(0, 1), device="cpu")
    assert (df.verdict == "holds").all(), df[["claim", "detail"]].to_string()


@pytest.mark.slow
def test_icrm_claim_holds_two_seeds():
    df = run_claims(["icrm.context_helps"], quick=True, seeds=(0, 1), device="cpu")
    assert (df.verdict == "holds").all(), df[["claim", "detail"]].to_string()
