"The balancing chapter: every method, bad inputs, determinism and the paper's claims."
import pytest, torch
from robustlearn import balancing as B
from robustlearn.claims import run_claims
from robustlearn.data import GroupDataset, make_spurious_digits, make_linear_spurious

@pytest.fixture(scope="module")
def digits():
    return make_spurious_digits(0.95, style="frame", seed=0)

def _weights(run):
    return torch.cat([p.detach().flatten() for p in run.model.parameters()])

@pytest.mark.parametrize("method", B.METHODS)
def test_every_method_trains_and_is_deterministic(method, digits):
    tr, va, te = digits
    r1 = B.train_method(method, tr, va, hparams=dict(epochs=2), seed=3, device="cpu")
    r2 = B.train_method(method, tr, va, hparams=dict(epochs=2), seed=3, device="cpu")
    assert torch.equal(_weights(r1), _weights(r2))
    assert list(r1.history.epoch) == [1, 2]
    res = B.evaluate(r1.model_at("worst_group"), te)
    assert 0 <= res["worst_group"] <= res["average"] <= 1 and len(res["per_group"]) == 4

def test_methods_on_linear_toy_with_other_models():
    tr, va, te = make_linear_spurious(n_train=300, n_valid=200, n_test=200, d_noise=10, seed=0)
    r = B.train_method("gdro", tr, va, hparams=dict(epochs=2),
                       model_fn=lambda d: torch.nn.Linear(d.x.shape[1], d.n_classes), device="cpu")
    assert isinstance(r.model_at("average"), torch.nn.Linear)

def test_subsampling_and_weights(digits):
    tr = digits[0]
    sub = B.subsample(tr, "group", seed=0)
    counts = sub.group_counts()
    assert (counts == tr.group_counts().min()).all()
    assert set(sub.x.flatten(1).sum(1).tolist()) <= set(tr.x.flatten(1).sum(1).tolist())   # a subset, no new rows
    w = B.balancing_weights(tr, "class")
    mass = torch.zeros(2, dtype=torch.float64).index_add_(0, tr.y, w)
    assert torch.allclose(mass, mass[0].expand(2))

def test_jtt_upweights_errors(digits, monkeypatch):
    tr, va, _ = digits
    seen = {}
    real = B.Batches
    def spy(data, *a, **k):
        seen.setdefault("sizes", []).append(len(data)); return real(data, *a, **k)
    monkeypatch.setattr(B, "Batches", spy)
    B.train_method("jtt", tr, va, hparams=dict(epochs=1, T=1, up=5), device="cpu")
    first, second = seen["sizes"]
    assert first == len(tr) and second > len(tr) and (second - len(tr)) % 4 == 0   # each error repeated up - 1 = 4 more times

def test_gdro_weights_move_to_the_worst_group():
    loss = B.GroupDROLoss(2, eta=0.5)
    model = torch.nn.Linear(1, 2)
    with torch.no_grad(): model.weight.zero_(); model.bias.copy_(torch.tensor([3., 0.]))
    batch = (torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]))
    for _ in range(3): loss(model, batch)
    assert loss.q[1] > 0.9 and torch.isclose(loss.q.sum(), torch.tensor(1.))

BAD = [
    ("unknown-method", lambda d: B.train_method("mixup", d[0], d[1]), ValueError, "expected one of ['erm', 'suby', 'subg', 'rwy', 'rwg', 'gdro', 'jtt']"),
    ("no-groups-subg", lambda d: B.train_method("subg", d[0].with_groups(None), d[1]), ValueError, "needs group labels"),
    ("no-groups-gdro", lambda d: B.train_method("gdro", d[0].with_groups(None), d[1]), ValueError, "needs group labels"),
    ("empty-group-subg", lambda d: B.train_method("subg", d[0].subset(d[0].g != 2), d[1]), ValueError, "['y=1,a=0'] have no training example"),
    ("empty-group-rwg", lambda d: B.train_method("rwg", d[0].subset(d[0].g != 1), d[1]), ValueError, "have no training example"),
    ("empty-group-gdro", lambda d: B.train_method("gdro", d[0].subset(d[0].g != 1), d[1]), ValueError, "have no training example"),
    ("mismatched-lengths", lambda d: GroupDataset(d[0].x, d[0].y[:-1]), ValueError, "different lengths"),
    ("labels-out-of-range", lambda d: GroupDataset(d[0].x, d[0].y + 5, n_classes=2), ValueError, "labels must be in [0, 2)"),
    ("valid-shape", lambda d: B.train_method("erm", d[0], GroupDataset(torch.zeros(3, 4), torch.tensor([0, 1, 0]))), ValueError, "differ in shape"),
    ("not-a-dataset", lambda d: B.train_method("erm", (d[0].x, d[0].y), d[1]), TypeError, "must be a GroupDataset"),
    ("bad-hparam", lambda d: B.train_method("erm", d[0], d[1], hparams=dict(eta=1.0)), ValueError, "unknown hyper-parameter(s) ['eta']"),
    ("bad-epochs", lambda d: B.train_method("erm", d[0], d[1], hparams=dict(epochs=0)), ValueError, "epochs must be a positive int"),
    ("selection-rule", lambda d: B.select([], "median"), ValueError, "unknown selection rule"),
    ("select-nothing", lambda d: B.select([], "average"), ValueError, "at least one run"),
    ("n-hparams", lambda d: B.sweep("erm", d[0], d[1], n_hparams=0), ValueError, "n_hparams must be a positive int"),
]

@pytest.mark.parametrize("call,exc,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, fragment, digits):
    with pytest.raises(exc) as info:
        call(digits)
    assert fragment in str(info.value)

def test_selection_without_valid_groups_is_refused(digits):
    tr, va, _ = digits
    r = B.train_method("erm", tr, va.with_groups(None), hparams=dict(epochs=1), device="cpu")
    assert set(r.best) == {"average"}
    with pytest.raises(ValueError, match="needs group labels in the validation set"):
        B.select([r], "worst_group")

def test_claims_hold_over_three_seeds():
    "The paper's three claims, quick preset, medians over seeds 0, 1, 2, thresholds as registered."
    df = run_claims(["balancing"], quick=True, seeds=(0, 1, 2), device="cpu", threads=2)
    assert len(df) == 3
    bad = df[df.verdict != "holds"]
    assert bad.empty, bad[["claim", "measured", "detail"]].to_string()

def test_claim_numbers_are_deterministic():
    B._cached_comparison.cache_clear()
    a = B.compare_methods(B.BalancingExperiment.preset(epochs=2, n_hparams=1), seed=5, device="cpu", methods=("erm", "subg"))
    b = B.compare_methods(B.BalancingExperiment.preset(epochs=2, n_hparams=1), seed=5, device="cpu", methods=("erm", "subg"))
    assert a.equals(b)

def test_sweep_in_worker_processes_matches_serial(digits):
    "The sweep's jobs give the same runs whether trained here or in two worker processes (one thread each)."
    tr, va, _ = digits
    here = B.sweep("rwg", tr, va, n_hparams=2, seeds=(0, 1), epochs=2, device="cpu")
    pool = B.sweep("rwg", tr, va, n_hparams=2, seeds=(0, 1), epochs=2, device="cpu", jobs=2)
    assert [(r.hparams, r.seed) for r in here] == [(r.hparams, r.seed) for r in pool]
    for a, b in zip(here, pool): assert torch.equal(_weights(a), _weights(b))

def test_sweep_job_failure_names_the_configuration(digits):
    tr, va, _ = digits
    def broken_model(d): raise RuntimeError("no such architecture")
    with pytest.raises(RuntimeError, match=r"sweep erm: configuration 0 at seed 0 failed: RuntimeError: no such architecture"):
        B.sweep("erm", tr, va, n_hparams=1, epochs=1, device="cpu", model_fn=broken_model)

def test_gdro_weights_recover_after_underflow():
    "A group that fell hundreds of nats behind (q below float32's range) regains its weight when its loss is the largest."
    loss = B.GroupDROLoss(2, eta=1.0)
    logits = lambda x: x                                           # the batch's inputs are its logits
    y, g = torch.tensor([0, 0]), torch.tensor([0, 1])
    easy, hard = [0., -60.], [-60., 0.]                            # cross-entropy about 0 and about 60
    for _ in range(3): loss(logits, (torch.tensor([easy, hard]), y, g))   # group 0 falls 180 nats behind: q[0] = 0 in float32
    assert loss.q[0] == 0
    for _ in range(4): loss(logits, (torch.tensor([hard, easy]), y, g))   # then suffers for 240 nats
    assert loss.q[0] > 0.99 and torch.isclose(loss.q.sum(), torch.tensor(1.))

class _Stop(Exception): pass

def test_jtt_repeats_the_first_models_errors_up_times(monkeypatch):
    "JTT's second stage trains on the training set with each of the first model's errors appearing `up` times."
    from robustlearn import balancing as B
    from robustlearn.data import make_linear_spurious
    tr, va, _ = make_linear_spurious(n_train=300, n_valid=60, n_test=60, seed=0)
    seen, real_predict = {}, B.predict
    def spy_predict(model, x, **kw):
        out = real_predict(model, x, **kw); seen["wrong"] = out.argmax(1) != tr.y; return out
    def stop(model, data, *a, **kw): seen["data"] = data; raise _Stop
    monkeypatch.setattr(B, "predict", spy_predict); monkeypatch.setattr(B, "train_epochs", stop)
    with pytest.raises(_Stop):
        B.train_method("jtt", tr, va, hparams=dict(epochs=2, T=1, up=5), seed=0, device="cpu", progress=False)
    wrong, data = seen["wrong"], seen["data"]
    assert 0 < wrong.sum() < len(tr)                                   # the first model makes some errors, not all
    copies = (tr.x[:, None] == data.x[None]).all(-1).sum(1)            # how often each training row is in stage 2's data
    assert torch.equal(copies, torch.where(wrong, 5, 1)), (copies[wrong][:5], copies[~wrong][:5])

# --- the class-imbalanced variant (make_spurious_digits(class_balance=p)) ---

def _digest(splits):
    import hashlib
    h = hashlib.sha256()
    for d in splits:
        for t in (d.x, d.y, d.g): h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

@pytest.mark.parametrize("kwargs,digest", [
    (dict(), "4b183b774ec003b3"),
    (dict(spurious_rate=0.95, style="frame", seed=0), "78175d955486d5a4"),
    (dict(spurious_rate=0.95, style="frame", seed=1), "629a57039c916a07"),
    (dict(spurious_rate=0.9, seed=2), "69a4136ffd29a867"),
    (dict(fractions=(0.6, 0.2, 0.2), seed=3), "2757c9476857c9d3"),
])
def test_default_digits_are_unchanged(kwargs, digest):
    "Digests of the splits taken before `class_balance` existed: the claims' data and the stored outputs rest on them."
    assert _digest(make_spurious_digits(**kwargs)) == digest
    assert _digest(make_spurious_digits(**kwargs, class_balance=None)) == digest

@pytest.mark.parametrize("p", [0.15, 0.3, 0.85])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_balance_gives_the_asked_share(p, seed):
    full = make_spurious_digits(0.95, style="frame", seed=seed)
    tr, va, te = make_spurious_digits(0.95, style="frame", seed=seed, class_balance=p)
    for d, f in zip((tr, va), full):
        share = d.class_counts()[1].item() / len(d)
        assert abs(share - p) <= 1 / len(d), (share, p, d.class_counts().tolist())     # within rounding
        common = 0 if p < 0.5 else 1
        assert d.class_counts()[common] == f.class_counts()[common]                   # only the too-common class is cut
        rows = {tuple(r) for r in f.x.flatten(1).tolist()}
        assert all(tuple(r) in rows for r in d.x.flatten(1).tolist())                 # a subset of the default split
    assert torch.equal(te.x, full[2].x) and torch.equal(te.g, full[2].g)              # test split untouched

def test_class_balance_is_deterministic_by_seed():
    a = make_spurious_digits(0.95, style="frame", seed=4, class_balance=0.15)
    b = make_spurious_digits(0.95, style="frame", seed=4, class_balance=0.15)
    c = make_spurious_digits(0.95, style="frame", seed=5, class_balance=0.15)
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)

def test_suby_and_rwy_act_on_the_imbalanced_variant(monkeypatch):
    "On class_balance=0.15, SUBY trains on equal class counts (dropping most of class 0) and RWY samples with non-uniform weights."
    tr, va, _ = make_spurious_digits(0.95, style="frame", seed=0, class_balance=0.15)
    seen, real = {}, B.Batches
    def spy(data, *a, weights=None, **k):
        seen["data"], seen["weights"] = data, weights; return real(data, *a, weights=weights, **k)
    monkeypatch.setattr(B, "Batches", spy)
    B.train_method("suby", tr, va, hparams=dict(epochs=1), device="cpu", progress=False)
    counts = seen["data"].class_counts()
    assert counts[0] == counts[1] == tr.class_counts().min() and len(seen["data"]) < 0.35 * len(tr), counts.tolist()
    B.train_method("rwy", tr, va, hparams=dict(epochs=1), device="cpu", progress=False)
    w = seen["weights"]
    assert w is not None and len(w) == len(tr) and w.max() / w.min() >= 5, (w.min(), w.max())   # 0.85 / 0.15 = 5.7
    mass = torch.zeros(2, dtype=torch.float64).index_add_(0, tr.y, w)
    assert torch.allclose(mass[0], mass[1])                                                 # each class drawn equally often

@pytest.mark.parametrize("p,fragment", [
    (0, "strictly between 0 and 1"), (1, "strictly between 0 and 1"), (1.5, "strictly between 0 and 1"),
    (-0.1, "strictly between 0 and 1"), (float("nan"), "strictly between 0 and 1"), (True, "strictly between 0 and 1"),
    ("0.15", "strictly between 0 and 1"),
    (1e-4, "leaves no example of class 1 in the train split"), (1 - 1e-4, "leaves no example of class 0 in the train split"),
])
def test_class_balance_bad_input(p, fragment):
    with pytest.raises(ValueError) as info:
        make_spurious_digits(class_balance=p)
    assert fragment in str(info.value)

def test_pixel_noise_moves_only_the_pixels():
    "pixel_noise=s adds N(0, s^2) to every pixel of every split; examples, labels, groups and the default data stay."
    clean = make_spurious_digits(0.95, style="frame", seed=1)
    noisy = make_spurious_digits(0.95, style="frame", seed=1, pixel_noise=0.75)
    for c, n in zip(clean, noisy):
        assert torch.equal(c.y, n.y) and torch.equal(c.g, n.g)
        diff = n.x - c.x
        assert abs(diff.mean().item()) < 0.02 and abs(diff.std().item() - 0.75) < 0.02, (diff.mean(), diff.std())
        assert (diff[:, 1] != 0).float().mean() > 0.99                 # the frame channel is noisy too
    assert _digest(make_spurious_digits(0.95, style="frame", seed=1, pixel_noise=0.0)) == _digest(clean)
    again = make_spurious_digits(0.95, style="frame", seed=1, pixel_noise=0.75)
    other = make_spurious_digits(0.95, style="frame", seed=2, pixel_noise=0.75)
    assert _digest(again) == _digest(noisy) and not torch.equal(other[0].x[:5], noisy[0].x[:5])

@pytest.mark.parametrize("s", [-0.1, float("inf"), float("nan"), True, "0.5"])
def test_pixel_noise_bad_input(s):
    with pytest.raises(ValueError, match="pixel_noise must be a finite number >= 0"):
        make_spurious_digits(pixel_noise=s)
