"VirAAL: VAT's direction, padding, entropy scores on the pool, the .iob loader, bad inputs, determinism, the sanity run, the claims at seed 0."
import pytest, torch
from robustlearn import viraal as V
from robustlearn.claims import REGISTRY
from robustlearn.text import Vocab


@pytest.fixture(scope="module")
def toy():
    recs = V.make_nlu(400, seed=5)
    voc, ints, tags = V.nlu_vocabs(recs)
    return recs, voc, ints, tags, V.encode_nlu(recs[:16], voc, ints, tags)

def _beats_random(direction, model, emb, mask, eps=0.1, n_random=100):
    "Per utterance: does the KL along `direction` exceed the KL along every one of n_random random directions of the same norm?"
    with torch.no_grad():
        clean = model(emb, mask)
        kl = lambda d: torch.tensor([V.joint_kl((clean[0][b:b+1], clean[1][b:b+1]), model(emb[b:b+1] + eps * d[b:b+1], mask[b:b+1]), mask[b:b+1]).item()
                                     for b in range(len(emb))])
        adv = kl(direction)
        best = torch.stack([kl(V.normalise_per_sentence(torch.randn_like(emb), mask)) for _ in range(n_random)]).max(0).values
    return adv > best

def test_adversarial_direction_beats_random_directions_and_a_broken_one_does_not(toy):
    recs, voc, ints, tags, (ids, mask, *_) = toy
    torch.manual_seed(0)
    net = V.JointNLU(len(voc), len(ints), len(tags)).eval()
    emb = net.embed(ids[:6]).detach(); m = mask[:6]
    assert _beats_random(V.adversarial_direction(net, emb, m), net, emb, m).all()
    broken = V.normalise_per_sentence(torch.randn_like(emb), m)           # a "power iteration" that skips the gradient
    assert not _beats_random(broken, net, emb, m).all()

def test_power_iteration_finds_the_top_eigenvector_of_the_kl_hessian():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 8, generator=g, dtype=torch.float64)
    lin = lambda e, mask: (e * mask[..., None]).flatten(1) @ W.T           # (1, 4, 2) -> (1, 5)
    e, mask = torch.randn(1, 4, 2, generator=g, dtype=torch.float64), torch.ones(1, 4, dtype=torch.bool)
    p = lin(e, mask).softmax(-1)[0]
    u1 = torch.linalg.eigh(W.T @ (torch.diag(p) - torch.outer(p, p)) @ W)[1][:, -1]
    torch.manual_seed(0)
    assert abs(V.adversarial_direction(lin, e, mask, xi=1e-6, power_iters=30).flatten() @ u1) > 0.999
    # the broken variant (the random start, normalised, never multiplied by H) is not aligned
    torch.manual_seed(0)
    assert abs(V.normalise_per_sentence(torch.randn(1, 4, 2, dtype=torch.float64), mask).flatten() @ u1) < 0.999

def test_slot_kl_ignores_padding_and_a_mean_over_padding_would_not():
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    a, b = (torch.randn(2, 4), torch.randn(2, 3, 5)), (torch.randn(2, 4), torch.randn(2, 3, 5))
    b2 = (b[0], b[1].clone()); b2[1][~mask] = 30.0
    assert V.joint_kl(a, b, mask) == pytest.approx(V.joint_kl(a, b2, mask).item(), abs=1e-6)
    ones = torch.ones_like(mask)
    assert V.joint_kl(a, b, ones) != pytest.approx(V.joint_kl(a, b2, ones).item(), abs=1e-3)

def test_entropy_scores_follow_their_utterances_and_normalise_over_the_pool(toy):
    recs, voc, ints, tags, _ = toy
    pool = V.encode_nlu(recs[:200], voc, ints, tags)
    torch.manual_seed(0)
    net = V.JointNLU(len(voc), len(ints), len(tags))
    idx, s = V.entropy_scores(net, pool)
    perm = torch.randperm(200)
    idx_p, s_p = V.entropy_scores(net, tuple(t[perm] for t in pool), batch_size=9)
    assert torch.equal(idx_p, perm) and torch.allclose(s_p, s[perm], atol=1e-3)
    li, ls = net(pool[0], pool[1])
    h = V._entropy(li)
    # the intent term is min-max normalised over the whole pool: the utterance of lowest intent entropy gets 0 from it
    assert torch.allclose(s, V.joint_entropy(li, ls, pool[1]), atol=1e-4)
    assert V._minmax(h).min() == 0 and V._minmax(h).max() == 1

def test_load_iob_reads_both_forms(tmp_path):
    (tmp_path / "train.w-intent.iob").write_text(
        "BOS i want to fly from boston EOS\tO O O O O O B-fromloc.city_name atis_flight\n"
        "BOS cheapest fare to denver EOS\tO B-cost_relative O O B-toloc.city_name atis_airfare#atis_flight\n"
        "add this song to my playlist \tO O O O O B-playlist_owner AddToPlaylist \n", encoding="utf-8")
    recs = V.load_iob(tmp_path / "train.w-intent.iob")
    assert [r.intent for r in recs] == ["atis_flight", "atis_airfare#atis_flight", "AddToPlaylist"]
    assert recs[0].tokens == "i want to fly from boston".split() and recs[0].tags[-1] == "B-fromloc.city_name"
    assert len(recs[1].tags) == 4 and recs[2].tags[-1] == "B-playlist_owner"
    V.write_iob(tmp_path / "out.iob", recs, bos_eos=True)
    assert V.load_iob(tmp_path / "out.iob") == recs

@pytest.mark.parametrize("call, message", [
    (lambda t: V.encode_nlu(t[0][:3], t[1], t[2], t[3], max_len=2), "more than the maximum 2"),
    (lambda t: V.JointNLU(len(t[1]), 6, 23, max_len=4)(t[4][0], t[4][1]), "more than max_len=4"),
    (lambda t: V.encode_nlu([V.NLURecord(["qwerty"], ["O"], t[2][0])], Vocab.build([["a"]], specials=("<pad>",)), t[2], t[3]), "unknown tokens"),
    (lambda t: V.NLURecord(["a", "b"], ["O"], "x"), "2 tokens but 1 tags"),
    (lambda t: V.encode_nlu([], t[1], t[2], t[3]), "empty pool"),
    (lambda t: V.seed_set(tuple(x[:0] for x in t[4]), 0.1), "the pool is empty"),
    (lambda t: V.entropy_scores(V.JointNLU(len(t[1]), 6, 23), tuple(x[:0] for x in t[4])), "empty pool"),
    (lambda t: V.vat_loss(V.JointNLU(len(t[1]), 6, 23), torch.zeros(2, 3, 32), torch.ones(2, 3, dtype=torch.bool), eps=0.0), "eps must be a positive number"),
    (lambda t: V.vat_loss(V.JointNLU(len(t[1]), 6, 23), torch.zeros(2, 3, 32), torch.ones(2, 3, dtype=torch.bool), eps=-2), "eps must be a positive number"),
    (lambda t: V.acquire(t[4], [0], 3, "margin"), "'entropy' or 'random'"),
    (lambda t: V.acquire(t[4], [0], 3, "entropy"), "needs the model"),
    (lambda t: V.viraal_runs(runs=["vat@50"]), "unknown runs"),
    (lambda t: V.slot_f1([["O"]], [["O", "O"]]), "same utterances and lengths"),
    (lambda t: V.train_joint(t[4], [], 10, 6, 23), "no labelled utterances"),
])
def test_bad_inputs(toy, call, message):
    with pytest.raises((ValueError, TypeError)) as e: call(toy)
    assert message in str(e.value), str(e.value)

def test_load_iob_bad_lines(tmp_path):
    (tmp_path / "a.iob").write_text("no tab here O intent\n")
    with pytest.raises(ValueError, match="expected 'words<TAB>tags intent'"): V.load_iob(tmp_path / "a.iob")
    (tmp_path / "b.iob").write_text("a b c\tO O x\n")
    with pytest.raises(ValueError, match="3 words but 2 tags"): V.load_iob(tmp_path / "b.iob")
    with pytest.raises(FileNotFoundError): V.load_iob(tmp_path / "none.iob")

def test_same_seed_same_numbers():
    cfg = V.VirAALConfig.preset("quick", pool=300, test=100, steps=20)
    a = V.viraal_runs(cfg, seed=2, device="cpu", runs=["ce@2", "vat+entropy@4"])
    b = V.viraal_runs(cfg, seed=2, device="cpu", runs=["ce@2", "vat+entropy@4"])
    assert a.drop(columns="seconds").equals(b.drop(columns="seconds"))

def test_sanity_full_pool_cross_entropy_learns_the_toy():
    "Cross-entropy on every pool utterance: if this fails the toy is mis-specified, not the method."
    cfg = V.VirAALConfig.preset("quick")
    d = V.nlu_experiment_data(cfg, seed=0)
    with V._threads(1):
        m = V.train_joint(d["pool"], range(cfg.pool), len(d["vocab"]), len(d["intents"]), len(d["tags"]), cfg, vat=False, seed=0)
    r = V.evaluate(m, d["test"], d["tags"])
    assert r["intent_acc"] >= 0.97 and r["slot_f1"] >= 0.95, r

@pytest.mark.parametrize("name", ["viraal.vat_helps_low_labels", "viraal.entropy_beats_random_with_vat", "viraal.fewer_labels"])
def test_claims_run_at_seed_0(name):
    res = REGISTRY[name](quick=True, seed=0)
    assert res.measured and all(abs(v) < 1e3 for v in res.measured.values())
    assert isinstance(res.holds, bool)                   # measured and reported; the verdict over seeds is `reproduce`'s
    if name == "viraal.vat_helps_low_labels":            # the half that holds on every seed (+13.0, +15.0, +9.6 points)
        assert res.measured["acc_gain"] >= 3, res.detail

def test_active_learning_takes_records(tmp_path):
    "A pool of records (e.g. read by load_iob) and test records: the loop runs, and refuses an empty pool or no test set."
    V.write_iob(tmp_path / "pool.iob", V.make_nlu(300, seed=1))
    pool, test = V.load_iob(tmp_path / "pool.iob"), V.make_nlu(60, seed=2)
    cfg = V.VirAALConfig.preset("quick", steps=5)
    with V._threads(1):
        res = V.active_learning(pool, cfg, acquisition="random", vat=False, rounds=1, query_size=6, test=test)
    assert [h["n_labelled"] for h in res["history"]] == [6, 12]
    with pytest.raises(ValueError, match="pool is empty"): V.active_learning([], cfg, test=test)
    with pytest.raises(ValueError, match="needs test records"): V.active_learning(pool, cfg)
