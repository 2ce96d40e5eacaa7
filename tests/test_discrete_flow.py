"Discrete flow matching: the mixture path, the sampler against known posteriors, bad inputs."
import pytest, torch
from torch import nn
from robustlearn import discrete_flow as D

class Posterior(nn.Module):
    "p(x1 | x_t) fixed: a categorical q per position (L, V)."
    def __init__(self, q):
        super().__init__(); self.q = q; self.L = q.shape[0]; self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x, t): return self.q.log().expand(len(x), -1, -1)

@pytest.mark.parametrize("source", D.SOURCES)
@pytest.mark.parametrize("n", [1.0, 2.0])
def test_sampler_reproduces_a_known_posterior(source, n):
    q = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.1, 0.1, 0.7]])
    s = D.sample_discrete(Posterior(q), D.MixturePath(4, source, n=n), 20000, steps=25, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        emp = torch.bincount(s[:, i], minlength=4).float() / len(s)
        assert torch.allclose(emp, q[i], atol=0.015)

def test_mixture_path_marginal():
    p = D.MixturePath(7, "uniform", n=2.0)
    x1 = torch.randint(0, 7, (20000, 2)); x0 = p.sample_source(x1.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((20000,), 0.6)
    xt = p.sample(x0, x1, t, generator=torch.Generator().manual_seed(2))
    from_data = (xt == x1) & (x0 != x1)
    assert abs(from_data.float().sum() / (x0 != x1).float().sum() - 0.36) < 0.02     # kappa = t^2

def test_loss_decreases_and_training_is_deterministic():
    def run():
        torch.manual_seed(0)
        m = D.TokenMLP(8, 2, hidden=32, depth=2)
        h = D.train_discrete_flow(m, lambda n: D.checkerboard_tokens(n, 8), D.MixturePath(8), steps=60, batch_size=128, seed=3, device="cpu")
        return h.losses
    a, b = run(), run()
    assert a == b and sum(a[-10:]) < sum(a[:10])

def test_total_variation_of_the_target_is_zero():
    tgt = D.checkerboard_target(8)
    cells = torch.nonzero(tgt > 0)                       # every dark cell once: the empirical law is the target
    assert D.total_variation(cells, tgt) < 1e-12

BAD = [
    ("source", lambda: D.MixturePath(4, "absorbing"), ValueError, "unknown source"),
    ("vocab", lambda: D.MixturePath(1), ValueError, "vocab_size must be an int >= 2"),
    ("tokens-range", lambda: D.MixturePath(4).sample(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 9), torch.zeros(2)), ValueError, "data tokens must be in [0, 4)"),
    ("t-shape", lambda: D.MixturePath(4).sample(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.zeros(3)), ValueError, "shape (2,)"),
    ("model-length", lambda: D.TokenMLP(4, 3)(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2)), ValueError, "x must be (B, 3)"),
    ("grid", lambda: D.checkerboard_target(6), ValueError, "multiple of 4"),
    ("steps", lambda: D.sample_discrete(D.TokenMLP(4, 2), D.MixturePath(4), 3, steps=0), ValueError, "steps must be a positive int"),
    ("n-samples", lambda: D.sample_discrete(D.TokenMLP(4, 2), D.MixturePath(4), 0), ValueError, "n must be a positive int"),
    ("tv-shape", lambda: D.total_variation(torch.zeros(5, 3, dtype=torch.long), D.checkerboard_target(4)), ValueError, "tokens must be (n, 2)"),
    ("tv-range", lambda: D.total_variation(torch.full((5, 2), 9), D.checkerboard_target(4)), ValueError, "tokens must be in [0, 4)"),
]

@pytest.mark.parametrize("call,exc,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)

def test_claim_holds_at_seed_0():
    "TV of 10k samples <= 0.1 on the 16 x 16 checkerboard, quick preset, seed 0 (seeds 0-2 are `reproduce`'s job)."
    from robustlearn.claims import run_claims
    df = run_claims(["discrete_flow.matches_target"], seeds=(0,), device="cpu", threads=2)
    assert (df.verdict == "holds").all(), df.detail.tolist()

class _SlowPath(D.MixturePath):
    "A broken sampler schedule: jumps with half the right probability (until the last step)."
    def jump_probability(self, t, h): return 0.5 * super().jump_probability(t, h) if t + h < 1 - 1e-9 else 1.0

class _FrozenPath(D.MixturePath):
    "A broken sampler: never unmasks."
    def jump_probability(self, t, h): return 0.0

@pytest.mark.parametrize("path, holds", [(D.MixturePath(8, "mask"), True), (D.MixturePath(8, "mask", n=2.0), True),
                                         (_SlowPath(8, "mask"), False), (_FrozenPath(8, "mask"), False)],
                         ids=["kappa=t", "kappa=t^2", "half-rate", "never-unmasks"])
def test_complete_samples_follow_kappa_squared(path, holds):
    "Tokens unmask on schedule: complete samples at t ~ Binomial(n, kappa_t^2) within 4 sd; a sampler off schedule is caught."
    q = torch.full((2, 8), 1 / 8)
    traj = D.sample_discrete(Posterior(q), path, 5000, steps=20, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    rows = D.complete_counts(traj, path, times=(0.25, 0.5, 0.75))
    assert [r["t"] for r in rows] == [0.25, 0.5, 0.75]
    ok = [r["ok"] for r in rows]
    assert all(ok) == holds and (holds or not any(ok)), rows              # a broken sampler is off at every time

def test_complete_counts_bad_input():
    traj = torch.full((21, 4, 2), 8)
    with pytest.raises(ValueError, match="not on the sampler's grid"): D.complete_counts(traj, D.MixturePath(8, "mask"), times=(0.33,))
    with pytest.raises(ValueError, match=r"traj must be \(steps \+ 1, n, L\)"): D.complete_counts(traj[0], D.MixturePath(8, "mask"))
    with pytest.raises(ValueError, match="mask source"): D.complete_counts(traj, D.MixturePath(8, "uniform"))

@pytest.mark.parametrize("args, fragment", [((D.MixturePath(4, "uniform"), 0.5, 10, 2), "mask source"),
                                            ((D.MixturePath(4, "mask"), 1.5, 10, 2), "t must be in [0, 1]"),
                                            ((D.MixturePath(4, "mask"), 0.5, 0, 2), "n must be a positive int")])
def test_expected_complete_bad_input(args, fragment):
    with pytest.raises(ValueError, match=None) as e: D.expected_complete(*args)
    assert fragment in str(e.value)
