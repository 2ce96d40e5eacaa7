"Checkpoints: atomic writes, and resuming a run gives the uninterrupted run's weights."
import pytest, torch
from robustlearn import core, data, nets

def _run(path, steps, resume, disturb=False):
    core.set_seed(0)
    tr, _, _ = data.make_spurious_digits(0.9, seed=0)
    model = nets.MLP(128, 2, hidden=(32,), dropout=0.3)   # dropout: the generator state matters
    if disturb: torch.rand(100)                           # move the global generator: resume must restore it
    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])
    hist = core.fit(model, loss, tr, steps=steps, batch_size=50, seed=3, device="cpu", checkpoint=path,
                    checkpoint_every=7, resume=resume, eval_fn=lambda m: {"w": m.head.weight.sum()}, eval_every=10)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), hist

def test_resume_equals_uninterrupted(tmp_path):
    full, h_full = _run(tmp_path / "a.pt", 40, resume=False)
    _run(tmp_path / "b.pt", 23, resume=False)              # stopped at step 23 (epoch 1, mid-epoch)
    resumed, h_res = _run(tmp_path / "b.pt", 40, resume=True, disturb=True)
    assert torch.equal(full, resumed)
    assert h_full.losses == h_res.losses
    # the stopped run evaluated at its end (23); the resumed history keeps that row
    assert [e["step"] for e in h_res.evals] == [10, 20, 23, 30, 40]
    assert [e for e in h_res.evals if e["step"] != 23] == h_full.evals

def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "c.pt"
    core.save_checkpoint(p, torch.nn.Linear(2, 2), step=1)
    before = p.read_bytes()
    def boom(tmp): tmp.write_bytes(b"half"); raise RuntimeError("crash while writing")
    with pytest.raises(RuntimeError): core.atomic_write(p, boom)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.pt"]

def test_checkpoint_refuses_pickled_code(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "f": print}, p)
    with pytest.raises(Exception):
        core.load_checkpoint(p, torch.nn.Linear(2, 2))
