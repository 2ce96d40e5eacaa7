"Multi-token prediction: gradients of the two implementations, exact speculative decoding, the tasks, bad inputs, claims."
import math
import numpy as np, pytest, torch
from robustlearn import mtp as M
from robustlearn.claims import run_claims


def _grads(model, fn, tok, tgt=None):
    model.zero_grad(set_to_none=True)
    out = fn(model, tok, tgt)
    if out.requires_grad: out.backward()
    return out.item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("n_heads,dtype,tol", [(1, torch.float64, 1e-5), (2, torch.float64, 1e-5), (4, torch.float64, 1e-5),
                                               (4, torch.float32, 1e-4)])
def test_sequential_heads_give_the_naive_gradients(n_heads, dtype, tol):
    torch.manual_seed(n_heads)
    m = M.MultiTokenGPT(300, n_heads=n_heads, n_layer=n_heads + 1, d_model=32, block_size=20).to(dtype)
    tok = torch.randint(0, 300, (3, 20))
    tgt = tok.clone(); tgt[:, :8] = -100
    for t in (None, tgt):
        l1, g1 = _grads(m, M.mtp_loss, tok, t)
        l2, g2 = _grads(m, M.mtp_backward, tok, t)
        assert g1.keys() == g2.keys() and len(g1) == len(list(m.parameters()))
        assert abs(l1 - l2) < 1e-4 * max(1, abs(l1))
        assert max((g1[k] - g2[k]).abs().max().item() for k in g1) <= tol


def test_loss_is_the_sum_of_shifted_cross_entropies():
    torch.manual_seed(0)
    m = M.MultiTokenGPT(20, n_heads=3, n_layer=3, d_model=16).double()
    tok = torch.randint(0, 20, (2, 9))
    logits = m(tok)                                                         # (3, B, T, V)
    ref = sum(torch.nn.functional.cross_entropy(logits[i, :, :9 - i - 1].reshape(-1, 20), tok[:, i + 1:].reshape(-1))
              for i in range(3))
    assert torch.allclose(M.mtp_loss(m, tok), ref)


def test_batched_greedy_equals_one_prompt_at_a_time():
    torch.manual_seed(0)
    m = M.MultiTokenGPT(25, n_heads=2, n_layer=3, d_model=32, block_size=32).eval()
    prompts = torch.randint(0, 25, (4, 6))
    batch, nf = M.greedy_decode(m, prompts, 10)
    assert batch.shape == (4, 16) and nf == 10 and torch.equal(batch[:, :6], prompts)
    for p, row in zip(prompts, batch):
        assert torch.equal(M.greedy_decode(m, p, 10)[0], row)
    assert len({tuple(r.tolist()) for r in batch}) > 1                  # the rows really differ


def test_speculative_equals_greedy_untrained_models():
    for seed in range(3):
        torch.manual_seed(seed)
        m = M.MultiTokenGPT(25, n_heads=4, n_layer=4, d_model=32, block_size=48).eval()
        for k in (1, 2, 3, 4):
            p = torch.randint(0, 25, (1 + 5 * seed,))
            g, nf = M.greedy_decode(m, p, 30)
            s, st = M.speculative_decode(m, p, 30, k=k)
            assert torch.equal(s, g) and nf == 30
            # a prefill, then a pass per step, except a last step left with one token: greedy's own choice, nothing to verify
            assert sum(st["accepted"]) == 30 and st["forwards"] == len(st["accepted"]) + (st["accepted"][-1] != 1)
            if k == 1: assert st["accepted"] == [1] * 30 and st["forwards"] == nf   # k = 1 is greedy, pass for pass
            for cache in (True, False):                  # one new token: the prefill's proposal, one pass, either way
                s1, st1 = M.speculative_decode(m, p, 1, k=k, cache=cache)
                assert torch.equal(s1, g[:len(p) + 1]) and st1 == dict(forwards=1, accepted=[1], proposed=[1])
            s, st = M.speculative_decode(m, p, 30, k=1, cache=False)
            assert torch.equal(s, g) and st["forwards"] == 30


def _shift_model(vocab=10, n_heads=3):
    """Real weights whose head i predicts "current token + 1 + i" (mod vocab) at every position: one-hot embeddings, no
    trunk, attention switched off, and each head's MLP a linear map (gelu(h) - gelu(-h) = h) that moves the normalised
    one-hot of t onto t + 1 + i, scaled to dominate the residual."""
    m = M.MultiTokenGPT(vocab, n_heads=n_heads, n_layer=n_heads, d_model=16, block_size=40).eval()
    D, eye = 16, torch.eye(16)
    with torch.no_grad():
        for prm in m.parameters(): prm.zero_()
        m.gpt.inp.weight[:, :vocab] = torch.eye(vocab)
        for ln in [m.gpt.ln_f] + [b.ln1 for b in m.heads] + [b.ln2 for b in m.heads]: ln.weight.fill_(1.0)
        m.gpt.head.weight[:, :vocab] = torch.eye(vocab)
        for i, b in enumerate(m.heads):
            shift = torch.zeros(D, D)
            shift[:vocab, :vocab] = torch.eye(vocab).roll(1 + i, 0)       # e_t -> e_(t + 1 + i)
            b.mlp[0].weight[:D], b.mlp[0].weight[D:2 * D] = eye, -eye
            b.mlp[2].weight[:, :D], b.mlp[2].weight[:, D:2 * D] = 10 * shift, -10 * shift
    return m


def test_speculative_accepts_everything_when_heads_agree():
    # real weights whose every head predicts "previous token + 1": proposals always agree with the verifier
    m = _shift_model()
    with torch.no_grad():
        tok = torch.tensor([[3, 7, 9, 0]])
        assert [m(tok)[i, 0].argmax(-1).tolist() for i in range(3)] == [[(t + 1 + i) % 10 for t in tok[0].tolist()] for i in range(3)]
        z = m.trunk(tok)
        assert torch.allclose(M.StackedHeads(m, range(3))(z), m(tok), atol=1e-5)
    for cache in (True, False):
        s, st = M.speculative_decode(m, torch.tensor([3]), 12, k=3, cache=cache)
        assert s.tolist() == [(3 + i) % 10 for i in range(13)]
        assert st["accepted"] == [3, 3, 3, 3] and st["forwards"] == 5
        assert M.acceptance_by_depth(st["accepted"], 3) == [1.0, 1.0, 1.0] and st["proposed"] == [3, 3, 3, 3]
        s, st = M.speculative_decode(m, torch.tensor([3]), 11, k=3, cache=cache)   # the budget cuts the last step to 2
        assert st["accepted"] == [3, 3, 3, 2] and st["proposed"] == [3, 3, 3, 2]
        assert M.acceptance_by_depth(st["accepted"], 3, st["proposed"]) == [1.0, 1.0, 1.0]   # depth 3 was not tried last
        assert M.acceptance_by_depth(st["accepted"], 3) == [1.0, 1.0, 0.75]                  # counted as a rejection


def test_kv_cache_gives_the_full_forward():
    "Prefill, then one token, then several at once, then a crop and a recompute: every head's logits equal the full pass."
    from robustlearn.nets import KVCache
    torch.manual_seed(0)
    m = M.MultiTokenGPT(40, n_heads=3, n_layer=5, d_model=32, block_size=24).eval()
    tok = torch.randint(0, 40, (2, 20))
    with torch.no_grad():
        full = m(tok)                                                       # (3, B, T, V)
        cache = KVCache()
        parts = [m(tok[:, a:b], cache=cache) for a, b in ((0, 7), (7, 8), (8, 13), (13, 20))]
        assert torch.allclose(torch.cat(parts, 2), full, atol=1e-5) and cache.pos == 20
        cache.crop(9)
        assert torch.allclose(m(tok[:, 9:], cache=cache), full[:, :, 9:], atol=1e-5)
        one_head = KVCache()                                                # only the heads that run keep a cache
        m(tok[:, :5], heads=[0], cache=one_head); assert len(one_head.kv) == 2 + 1   # trunk blocks + head 0
    with pytest.raises(ValueError, match="exceeds the context"): m(tok[:, :5], cache=cache)   # 20 + 5 > 24


def test_stacked_heads_equal_each_head_with_and_without_cache():
    "Heads run as one batched block give each head's logits: a full pass, then a prefill, steps, a crop and a recompute."
    from robustlearn.nets import KVCache
    torch.manual_seed(0)
    m = M.MultiTokenGPT(40, n_heads=4, n_layer=6, n_head=2, d_model=32, block_size=24).eval()
    with torch.no_grad():
        for prm in m.parameters(): prm.add_(0.3 * torch.randn_like(prm))   # every bias and norm weight away from its init
        tok = torch.randint(0, 40, (2, 20))
        z = m.trunk(tok)
        for heads in ([1, 2, 3], [0], [3, 1]):
            assert torch.allclose(M.StackedHeads(m, heads)(z), m(tok, heads=heads), atol=1e-5)
        st, cache, parts = M.StackedHeads(m, range(1, 4)), KVCache(), []
        for a, b in ((0, 7), (7, 8), (8, 13)):
            parts.append(st(m.trunk(tok[:, a:b], cache), cache))
        full = m(tok, heads=range(1, 4))
        assert torch.allclose(torch.cat(parts, 2), full[:, :, :13], atol=1e-5)
        cache.crop(9)
        assert torch.allclose(st(m.trunk(tok[:, 9:], cache), cache), full[:, :, 9:], atol=1e-5)
    with pytest.raises(ValueError, match="at least one head"): M.StackedHeads(m, [])
    with pytest.raises(ValueError, match=r"trunk's output \(B, T, 32\)"): st(tok)          # token ids, not the trunk's output
    from robustlearn.nets import causal_attention
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="needs the layer"): causal_attention(q, q, q, KVCache())   # one shared key: refused


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_decoders_equal_plain_greedy_with_partial_acceptance(seed):
    "With a bias on the unembedding the heads often agree, so steps accept 1..k tokens and the cache is cropped."
    torch.manual_seed(seed)
    m = M.MultiTokenGPT(30, n_heads=4, n_layer=6, d_model=32, block_size=64).eval()
    with torch.no_grad(): m.gpt.head.bias.copy_(torch.randn(30) * 0.5)
    accepted = []
    for k in (2, 3, 4):
        for L in (1, 5, 17):
            p = torch.randint(0, 30, (L,))
            plain = M.greedy_decode(m, p, 40, cache=False)[0]
            assert torch.equal(M.greedy_decode(m, p, 40)[0], plain)
            (s0, st0), (s1, st1) = (M.speculative_decode(m, p, 40, k=k, cache=c) for c in (False, True))
            assert torch.equal(s0, plain) and torch.equal(s1, plain) and st0 == st1
            accepted += st1["accepted"]
    assert set(accepted) == {1, 2, 3, 4}


def test_children_stories():
    st = M.ChildrenStories(n_first=8, n_second=8, seed=1)
    tok, mask = st.sample(30, 96, "test", seed=0)
    assert tok.shape == (30, 96) and tok.max() < st.vocab_size and 140 < st.vocab_size < 400
    train = {tuple(p) for p in st.names["train"]}
    for r in range(30):
        for t in mask[r].nonzero().flatten().tolist():
            a, b = tok[r, t - 1].item(), tok[r, t].item()
            assert st.first0 <= a < st.second0 <= b and (a - st.first0, b - st.second0) not in train
            assert (a, b) in [(tok[r, s - 1].item(), tok[r, s].item()) for s in range(1, t - 1)]   # copied from earlier
    assert torch.equal(st.sample(4, 50, seed=3)[0], st.sample(4, 50, seed=3)[0])
    assert not torch.equal(st.sample(4, 50, seed=3)[0], st.sample(4, 50, seed=4)[0])
    words = st.decode(tok[0]).split()
    assert words[:4] == ["once", "upon", "a", "time"] and '"' in " ".join(st.decode(r) for r in tok)   # stories, with dialogue


def test_induction_run_reports_the_best_checkpoint():
    cfg = M.MTPExperiment.preset(True, n_layer=2, d_model=16, length=32, n_train=64, steps=6, batch_size=8, n_test=16, eval_every=2)
    r = M.induction_run(1, cfg, seed=0, device="cpu")
    ev = [e["induction"] for e in r["history"].evals]
    assert len(ev) == 3 and r["induction"] == max(ev) and r["final"] == ev[-1]
    assert r["best_step"] in (2, 4, 6)
    with pytest.raises(ValueError, match="task must be 'stories' or 'markov'"):
        M.induction_run(1, M.MTPExperiment.preset(True, task="books"))


@pytest.mark.parametrize("call,message", [
    (lambda m: M.MultiTokenGPT(50, n_heads=0), "n_heads must be an int >= 1"),
    (lambda m: M.MultiTokenGPT(50, n_heads=3, n_layer=2), "must be at least n_heads"),
    (lambda m: M.speculative_decode(m, torch.tensor([1, 2]), 4, k=3), "k (3) cannot exceed the model's number of heads (2)"),
    (lambda m: M.speculative_decode(m, torch.tensor([1, 2]), 4, k=0), "k must be an int >= 1"),
    (lambda m: M.greedy_decode(m, torch.zeros(30, dtype=torch.long), 5), "exceed the model's context (32)"),
    (lambda m: M.speculative_decode(m, torch.zeros(40, dtype=torch.long), 0), "exceed the model's context (32)"),
    (lambda m: M.greedy_decode(m, torch.tensor([3, 50]), 2), "token ids must be in [0, 50)"),
    (lambda m: M.greedy_decode(m, torch.tensor([-1]), 2), "token ids must be in [0, 50)"),
    (lambda m: M.greedy_decode(m, torch.tensor([1.0]), 2), "tensor of token ids"),
    (lambda m: m(torch.full((1, 3), 50)), "token ids must be in [0, 50)"),
    (lambda m: M.mtp_loss(m, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)), "targets must have"),
    (lambda m: M.train_mtp(m, torch.zeros(4, 40, dtype=torch.long), steps=1), "exceed the context (32)"),
    (lambda m: M.StoryTask().sample(2, split="dev"), "split must be 'train' or 'test'"),
    (lambda m: M.ChildrenStories().sample(2, split="dev"), "split must be 'train' or 'test'"),
    (lambda m: M.ChildrenStories(max_sentences=2), "max_sentences must be at least min_sentences"),
    (lambda m: M.train_mtp(m, torch.zeros(4, 8, dtype=torch.long), steps=2, warmup=3), "warmup must be"),
    (lambda m: M.poly_dataset(3, ops=(2, 1)), "ops must be (lo, hi)"),
    (lambda m: M.poly_dataset(3, ops=(1, 2, 3)), "ops must be (lo, hi)"),
    (lambda m: M.induction_accuracy(m, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool)), "selects no position"),
])
def test_bad_inputs(call, message):
    m = M.MultiTokenGPT(50, n_heads=2, n_layer=2, d_model=16, block_size=32)
    with pytest.raises(ValueError) as e: call(m)
    assert message in str(e.value)


def test_training_is_deterministic_and_implementation_independent():
    data = torch.randint(0, 30, (64, 16), generator=torch.Generator().manual_seed(0))
    runs = []
    for seq in (True, True, False):
        torch.manual_seed(0)
        m = M.MultiTokenGPT(30, n_heads=2, n_layer=3, d_model=16, block_size=16)
        runs.append(M.train_mtp(m, data, steps=6, batch_size=8, sequential=seq, device="cpu", progress=False).losses)
    assert runs[0] == runs[1]
    assert np.allclose(runs[0], runs[2], atol=1e-4)


def test_polynomial_ring_laws():
    rng = np.random.default_rng(0)
    X = np.array([0, 1, 0, 0, 0])
    for _ in range(30):
        p, q, r = (rng.integers(0, 7, 5) for _ in range(3))
        assert (M.poly_mul(p, (q + r) % 7) == (M.poly_mul(p, q) + M.poly_mul(p, r)) % 7).all()     # distributive
        r0 = r.copy(); r0[0] = 0   # associative when the innermost polynomial has no constant term (see the chapter)
        assert (M.poly_compose(p, M.poly_compose(q, r0)) == M.poly_compose(M.poly_compose(p, q), r0)).all()
        assert (M.poly_compose(p, X) == p).all() and (M.poly_compose(X, p) == p).all()            # X is the identity
        assert (M.poly_compose(p, np.zeros(5, np.int64)) == np.r_[p[0], 0, 0, 0, 0]).all()        # p(0) is the constant
        assert (M.poly_eval(("add", p, ("neg", p))) == 0).all()
    # with a constant term inside, truncating the outer polynomial first changes the result: not associative
    p, q, r = np.array([0, 0, 0, 0, 1]), np.array([0, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 0])
    assert not (M.poly_compose(p, M.poly_compose(np.array([0, 0, 1, 0, 0]), r)) ==
                M.poly_compose(M.poly_compose(p, np.array([0, 0, 1, 0, 0])), r)).all()


def test_story_names_are_copied_not_memorised():
    task = M.StoryTask(n_first=8, n_second=8, seed=1)
    tok, mask = task.sample(200, 48, "test", seed=0)
    F_, A = task.n_filler, task.n_first
    for r in range(20):
        for t in mask[r].nonzero().flatten().tolist():
            a, b = tok[r, t - 1].item(), tok[r, t].item()
            earlier = [(tok[r, s - 1].item(), tok[r, s].item()) for s in range(1, t - 1)]
            assert F_ <= a < F_ + A and (a, b) in earlier                                          # a later mention


def test_memory_claim_holds_quick():
    df = run_claims(["mtp.memory_is_flat"], quick=True, seeds=(0,), device="cpu", threads=2)
    row = df.iloc[0]
    assert row.verdict == "holds", row.detail


@pytest.mark.slow
def test_speculative_claims_hold_two_seeds():
    df = run_claims(["mtp.speculative_is_exact", "mtp.speculative_is_faster"], quick=True, seeds=(0, 1), device="cpu", threads=2)
    assert (df.verdict == "holds").all(), df[["claim", "detail"]].to_string()


def test_memory_probe_says_where_it_measures(monkeypatch, tmp_path):
    "Without Linux's /proc the CPU memory probe says what it needs instead of failing on a missing file."
    monkeypatch.setattr(M, "_PROC", tmp_path / "no-proc")
    with pytest.raises(RuntimeError, match=r"measuring CPU memory needs Linux's .*measure on a CUDA device"):
        M.step_memory(1, True, vocab_size=16, length=8, device="cpu")


@pytest.mark.slow
def test_helps_induction_at_seed_0():
    "The claim on the children's stories (about 5 minutes on 2 cores): the 2-head model forms induction, the 1-head one does not."
    df = run_claims(["mtp.helps_induction"], quick=True, seeds=(0,), device="cpu", threads=2)
    assert df.iloc[0].verdict == "holds", df.iloc[0].detail


def test_tie_gap_measures_the_reference_choice_where_decodings_part():
    torch.manual_seed(0)
    m = M.MultiTokenGPT(12, n_heads=2, n_layer=3, d_model=16, block_size=32).eval()
    ref, _ = M.greedy_decode(m, torch.tensor([1, 2, 3]), 10)
    assert M.tie_gap(m, ref, ref.clone()) == float("inf")
    other = ref.clone(); other[6] = (ref[6] + 5) % 12; other[8] = 0            # parts at position 6
    lg = m(ref[None, :6], heads=[0])[0, 0, -1].detach()
    gap = M.tie_gap(m, ref, other, start=3)
    assert gap == pytest.approx(float(lg[ref[6]] - lg[other[6]]), abs=1e-6) and gap > M.TIE   # greedy's token scores higher
    a = int(ref[3]); b = (a + 1) % 12          # the first new token, and a token made its twin
    with torch.no_grad():                       # the unembedding cannot tell them apart: a choice between them is a tie
        m.gpt.head.weight[b] = m.gpt.head.weight[a]; m.gpt.head.bias[b] = m.gpt.head.bias[a]
    ref, _ = M.greedy_decode(m, torch.tensor([1, 2, 3]), 10)
    assert int(ref[3]) in (a, b)                # the prompt's logits are unchanged, but b now equals a
    other = ref.clone(); other[3] = a + b - int(ref[3])
    assert M.tie_gap(m, ref, other, start=3) == 0.0
    with pytest.raises(ValueError, match="1-d and alike"): M.tie_gap(m, ref, ref[:-1])
    with pytest.raises(ValueError, match="inside the prompt"): M.tie_gap(m, ref, (ref + 1) % 12)
    bad = ref.clone(); bad[2] = (bad[2] + 1) % 12
    with pytest.raises(ValueError, match="inside the prompt"): M.tie_gap(m, ref, bad, start=3)


def test_decoding_stats_counts_mismatches_at_ties_apart(monkeypatch):
    "A cached greedy decoding that departs from the uncached one at a twin-token tie: a mismatch, and a tie."
    torch.manual_seed(0)
    m = M.MultiTokenGPT(12, n_heads=2, n_layer=3, d_model=16, block_size=32).eval()
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    first = [int(M.greedy_decode(m, p, 1)[0][-1]) for p in prompts]
    a = first[0]; b = (a + 1) % 12
    with torch.no_grad():
        m.gpt.head.weight[b] = m.gpt.head.weight[a]; m.gpt.head.bias[b] = m.gpt.head.bias[a]
    real = M.greedy_decode
    def departing(model, prompt, n_new, cache=True):           # the cached decoder swaps the twins at the first new token
        seq, n = real(model, prompt, n_new, cache=cache)
        if cache and prompt[0] == 1: seq = seq.clone(); seq[3] = a + b - int(seq[3])
        return seq, n
    monkeypatch.setattr(M, "greedy_decode", departing)
    st = M.decoding_stats(m, prompts, 6, ks=(2,))
    assert st["greedy"]["mismatches"] == 1 and st["greedy"]["ties"] == 1
    assert st[2]["mismatches"] == 0 and st[2]["ties"] == 0   # speculative decoding is compared with the uncached reference


def test_acceptance_by_depth_counts_only_the_steps_that_tried_a_depth():
    assert M.acceptance_by_depth([4, 1, 2], 4, [4, 4, 2]) == pytest.approx([1.0, 2 / 3, 0.5, 0.5])   # depths 3-4: 2 steps
    assert [math.isnan(v) for v in M.acceptance_by_depth([1, 1], 3, [1, 1])] == [False, True, True]   # never tried
    with pytest.raises(ValueError, match="must match"): M.acceptance_by_depth([1, 2], 2, [2])


@pytest.mark.parametrize("accepted, k, proposed", [([0, 2], 2, None), ([3], 2, None), ([2, 2], 2, [2, 1]), ([1], 2, [3])])
def test_acceptance_by_depth_refuses_impossible_steps(accepted, k, proposed):
    "A step accepts 1..(its proposals) tokens and proposes at most k: anything else is a bookkeeping error, said."
    with pytest.raises(ValueError, match="each step must accept"):
        M.acceptance_by_depth(accepted, k, proposed)
