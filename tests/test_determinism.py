"The same seed gives the same numbers."
import torch
from robustlearn import core, data, nets

def _train(seed):
    core.set_seed(seed)
    tr, va, te = data.make_spurious_digits(0.9, seed=seed)
    model = nets.MLP(128, 2, hidden=(32,), dropout=0.1)
    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])
    hist = core.fit(model, loss, tr, steps=30, batch_size=32, seed=seed, device="cpu")
    return torch.cat([p.detach().flatten() for p in model.parameters()]), hist.losses

def test_fit_is_deterministic():
    w1, l1 = _train(0)
    w2, l2 = _train(0)
    assert torch.equal(w1, w2) and l1 == l2
    w3, _ = _train(1)
    assert not torch.equal(w1, w3)

def test_generators_are_deterministic():
    for name in data.TOY_2D:
        assert torch.equal(data.sample_2d(name, 50, 3), data.sample_2d(name, 50, 3))
        assert not torch.equal(data.sample_2d(name, 50, 3), data.sample_2d(name, 50, 4))
    a, b = data.make_linear_spurious(seed=2)[0], data.make_linear_spurious(seed=2)[0]
    assert torch.equal(a.x, b.x) and torch.equal(a.g, b.g)

def test_batches_do_not_touch_global_rng():
    core.set_seed(5); ref = torch.rand(3)
    core.set_seed(5); core.Batches(torch.arange(10), 3, seed=0)(7); after = torch.rand(3)
    assert torch.equal(ref, after)
