"Stress tests and signed predictions: the metrics, the Merkle root by hand, every kind of tampering detected, bad inputs, determinism, the claims at seed 0."
import hashlib
from dataclasses import replace
import numpy as np, pandas as pd, pytest
from robustlearn import stress as S
from robustlearn.claims import run_claims

@pytest.fixture(scope="module")
def setup():
    cfg = S.StressExperiment.preset("quick", n_train=3000, n_valid=6000, n_test=4000, n_community=400, n_boot=0)
    st = S.stress_study(cfg, seed=0)
    prov = S.Provider.generate()
    model = st["models"]["tpr_equalised"]
    com = prov.commit(model)
    x = st["tests"][0].data["x"][:37]
    return cfg, st, prov, model, com, x, prov.answer(model, x)

def test_merkle_root_recomputed_by_hand():
    H = lambda *p: hashlib.sha256(b"".join(p)).digest()
    leaves = [H(bytes([i])) for i in range(7)]
    n01, n23, n45 = H(b"\x01", leaves[0], leaves[1]), H(b"\x01", leaves[2], leaves[3]), H(b"\x01", leaves[4], leaves[5])
    expected = H(b"\x01", H(b"\x01", n01, n23), H(b"\x01", n45, leaves[6]))        # 7 -> 4 (the 7th promoted) -> 2 -> 1
    assert S.merkle_root(leaves) == expected
    assert S.merkle_root(leaves[:6] + [leaves[6], leaves[6]]) != expected         # no duplicate-last-node collision

def test_transcript_root_is_over_input_hashes_and_predictions(setup):
    *_, x, t = setup
    leaves = [hashlib.sha256(b"\x00" + S.input_hash(r) + int(p).to_bytes(8, "big", signed=True)).digest() for r, p in zip(x, t.predictions)]
    assert t.receipt.root == S.merkle_root(leaves) and t.receipt.n == len(x)

def test_honest_transcripts_pass(setup):
    cfg, st, prov, model, com, x, t = setup
    assert S.verify(t, x, prov.public_key) and S.audit(t, x, model, com)
    assert S.verify(t, x.tolist(), prov.public_key)                                  # a list of rows is the same batch

@pytest.mark.parametrize("field", ["root", "inputs_digest", "n", "commitment", "sequence", "previous"])
def test_every_receipt_field_is_signed(setup, field):
    cfg, st, prov, model, com, x, t = setup
    v = getattr(t.receipt, field)
    bad = replace(t.receipt, **{field: v + 1 if isinstance(v, int) else bytes([v[0] ^ 1]) + v[1:]})
    assert not S.verify(replace(t, receipt=bad), x, prov.public_key)

def test_every_prediction_is_bound(setup):
    cfg, st, prov, model, com, x, t = setup
    for i in range(len(x)):
        p = t.predictions.copy(); p[i] = 1 - p[i]
        assert not S.verify(replace(t, predictions=p), x, prov.public_key)
        assert not S.audit(replace(t, predictions=p), x, model, com)
    assert not S.verify(replace(t, predictions=t.predictions[:-1]), x, prov.public_key)
    assert not S.verify(replace(t, signature=bytes(64)), x, prov.public_key)

def test_every_weight_is_bound(setup):
    cfg, st, prov, model, com, x, t = setup
    sd = model.state_dict()
    for k in range(len(model.w)):
        w = model.w.copy(); w[k] = np.nextafter(w[k], np.inf)                         # the smallest change a float64 allows
        assert not S.audit(t, x, S.ThresholdModel(w, model.b, model.thresholds, model.group_cols), com)
    for key in model.thresholds:
        th = dict(model.thresholds); th[key] = np.nextafter(th[key], np.inf)
        assert not S.audit(t, x, S.ThresholdModel(model.w, model.b, th, model.group_cols), com)
    assert not S.audit(t, x, model, replace(com, salt=bytes(32)))                      # the wrong salt does not open it
    assert S.serialize_weights(sd) == S.serialize_weights(model)

def test_model_swap_caught_exactly_when_the_models_disagree(setup):
    cfg, st, prov, model, com, x, t = setup
    a, b = st["models"]["plain"], st["models"]["demographic_parity"]
    p = S.Provider.generate(); ca = p.commit(a)
    pool = st["tests"][0].data["x"]
    for i in range(0, 400, 4):
        xb = pool[i:i + 4]
        tb = p.answer(b, xb)
        assert S.verify(tb, xb, p.public_key)                                            # honestly signed ...
        assert S.audit(tb, xb, a, ca) == bool((a.predict(xb) == b.predict(xb)).all())    # ... caught iff A and B disagree
        assert not S.audit(tb, xb, b, ca)                                                # B does not open A's commitment

def test_receipts_chain(setup):
    cfg, st, prov, model, com, x, t = setup
    t2 = prov.answer(model, x[:5])
    assert t2.receipt.previous == hashlib.sha256(t.receipt.to_bytes()).digest() and t2.receipt.sequence == t.receipt.sequence + 1

def test_run_stress_tests_reports_every_test(setup):
    cfg, st, *_ = setup
    res = st["results"]
    assert len(res) == 9 and set(res.columns) >= {"model", "test", "owner", "n", "metric", "value", "lo", "hi", "threshold", "direction", "passed"}
    r = S.run_stress_tests(st["models"]["plain"].predict, st["tests"][:1], n_boot=200)
    assert r.lo[0] <= r.value[0] <= r.hi[0]
    # the DP gap by hand
    reg = st["tests"][1]; p = st["models"]["plain"].predict(reg.data["x"]); a = reg.data["a"]
    assert S.dp_gap_metric(p, reg.data) == pytest.approx(abs(p[a == 1].mean() - p[a == 0].mean()))

@pytest.mark.parametrize("call, message", [
    (lambda s: S.StressTest("t", "o", {"x": np.zeros((3, 2))}, S.accuracy_metric, 0.5, "at least"), "direction must be 'min'"),
    (lambda s: S.StressTest("t", "o", {"x": np.zeros((3, 2)), "y": np.zeros(2)}, S.accuracy_metric, 0.5, "min"), "aligned"),
    (lambda s: S.verify(s[6], s[5][:-1], s[2].public_key), "answers other inputs"),
    (lambda s: S.verify(s[6], s[5][::-1], s[2].public_key), "answers other inputs"),
    (lambda s: S.audit(s[6], s[5] * 2, s[3], s[4]), "answers other inputs"),
    (lambda s: S.audit(s[6], s[5], s[3], s[4].published()), "not opened"),
    (lambda s: S.verify(s[6], s[5], b"short"), "32 raw bytes"),
    (lambda s: S.Provider.generate().answer(s[3], s[5]), "commit to a model before answering"),
    (lambda s: S.merkle_root([]), "at least one leaf"),
    (lambda s: S.demographic_parity_gap(np.array([1, 0]), np.array([1, 1])), "a = 0 and a = 1"),
    (lambda s: S.make_lending(0), "n must be a positive int"),
    (lambda s: S.serialize_weights({}), "non-empty state_dict"),
])
def test_bad_inputs(setup, call, message):
    with pytest.raises((ValueError, TypeError)) as e: call(setup)
    assert message in str(e.value), str(e.value)

def test_study_is_deterministic():
    cfg = S.StressExperiment.preset("quick", n_train=2000, n_valid=4000, n_test=3000, n_community=300, n_boot=50, n_tamper=10, n_honest=4)
    a, b = S.stress_study(cfg, seed=3), S.stress_study(cfg, seed=3)
    pd.testing.assert_frame_equal(a["results"], b["results"])
    assert S.tampering_study(a["models"], a["tests"], cfg, 3) == S.tampering_study(b["models"], b["tests"], cfg, 3)
    assert S.swap_study(a["models"], a["tests"], cfg, 3) == S.swap_study(b["models"], b["tests"], cfg, 3)

def test_claims_hold_at_seed_0():
    df = run_claims(["stress.metric_is_not_enough", "stress.tampering_detected", "stress.model_swap_caught"], quick=True, seeds=(0,), device="cpu", threads=2)
    assert (df.verdict == "holds").all(), df

def test_test_sets_and_thresholds_can_be_committed(setup):
    cfg, st, prov, *_ = setup
    data = st["tests"][2].data
    c = prov.commit_bytes(S.serialize_weights(data))
    assert S.opens(c, S.serialize_weights(data))
    moved = {**data, "x": data["x"].copy()}; moved["x"][0, 0] += 1e-12                  # one applicant edited after the commitment
    assert not S.opens(c, S.serialize_weights(moved))
    t = prov.commit_bytes(b"threshold=0.80")
    assert S.opens(t, b"threshold=0.80") and not S.opens(t, b"threshold=0.70")
    with pytest.raises(ValueError, match="not opened"): S.opens(t.published(), b"threshold=0.80")


def test_non_integer_predictions_are_not_what_was_signed(setup):
    "Truncating 0.7 to 0 would accept predictions that were never signed; a NaN is a failed check, not a crash."
    cfg, st, prov, model, com, x, t = setup
    for bad in (t.predictions + 0.7, np.where(np.arange(len(x)) == 3, np.nan, t.predictions)):
        assert not S.verify(replace(t, predictions=bad), x, prov.public_key)
        assert not S.audit(replace(t, predictions=bad), x, model, com)
    assert S.verify(replace(t, predictions=t.predictions.astype(float)), x, prov.public_key)   # 1.0 is the label 1
    class Probabilities:
        def predict(self, x): return np.full(len(x), 0.7)
    with pytest.raises(ValueError, match="integer labels"): prov.answer(Probabilities(), x)


def test_verify_ties_the_receipt_to_the_published_commitment(setup):
    cfg, st, prov, model, com, x, t = setup
    pub = com.published()
    assert S.verify_commitment(pub, prov.public_key) and S.verify(t, x, prov.public_key, commitment=pub)
    other = S.Provider.generate()
    assert not S.verify_commitment(pub, other.public_key)
    assert not S.verify_commitment(replace(pub, digest=bytes(32)), prov.public_key)
    # receipts signed under a second commitment (B) fail against the published one (A)
    fork = S.Provider(prov.key)
    fork.commit(st["models"]["plain"])
    tb = fork.answer(st["models"]["plain"], x)
    assert S.verify(tb, x, prov.public_key) and not S.verify(tb, x, prov.public_key, commitment=pub)


def test_verify_chain(setup):
    cfg, st, prov, model, com, x, t = setup
    p = S.Provider.generate(); p.commit(model)
    ts = [p.answer(model, x[i:i + 5]) for i in range(0, 20, 5)]
    assert S.verify_chain(ts, p.public_key)
    assert not S.verify_chain([ts[0], ts[2], ts[3]], p.public_key)                   # one dropped
    assert not S.verify_chain([ts[1], ts[0], ts[2], ts[3]], p.public_key)            # reordered
    assert not S.verify_chain(ts[:3] + [replace(ts[3], signature=bytes(64))], p.public_key)   # a forged signature
