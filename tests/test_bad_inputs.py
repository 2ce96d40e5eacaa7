"Every public function of the substrate rejects bad input with a clear error (table-driven)."
import pytest, torch
from robustlearn import core, data, nets, metrics, claims

X, Y = torch.randn(8, 3), torch.randint(0, 2, (8,))
lin = torch.nn.Linear(3, 1)
mse = lambda m, b: ((m(b[0]).squeeze(-1) - b[1].float()) ** 2).mean()

CASES = [
    # (id, call, exception type, fragment of the message)
    ("seed-negative", lambda: core.set_seed(-3), ValueError, "[0, 2**32)"),
    ("seed-float", lambda: core.set_seed(0.5), TypeError, "must be an int"),
    ("device-unknown", lambda: core.get_device("gpu"), ValueError, "unknown device"),
    ("batches-empty", lambda: core.Batches((X[:0], Y[:0]), 2), ValueError, "empty data set"),
    ("batches-weights-shape", lambda: core.Batches((X, Y), 2, weights=torch.ones(3)), ValueError, "weights must have shape (8,)"),
    ("fit-steps", lambda: core.fit(lin, mse, (X, Y), steps=1.5), ValueError, "steps must be a non-negative int"),
    ("fit-model", lambda: core.fit("net", mse, (X, Y), steps=1), TypeError, "torch.nn.Module"),
    ("fit-lr", lambda: core.fit(lin, mse, (X, Y), steps=1, lr=-1), ValueError, "lr must be a positive number"),
    ("fit-eval-every", lambda: core.fit(lin, mse, (X, Y), steps=1, eval_every=0), ValueError, "eval_every must be a positive int"),
    ("config-preset", lambda: core.Config.preset("huge"), ValueError, "unknown preset"),
    ("checkpoint-missing", lambda: core.load_checkpoint("/nonexistent/c.pt", lin), FileNotFoundError, "no checkpoint"),
    ("groupdataset-lengths", lambda: data.GroupDataset(X, Y[:5]), ValueError, "different lengths: 8 and 5"),
    ("groupdataset-float-labels", lambda: data.GroupDataset(X, Y.float()), TypeError, "must hold integers"),
    ("groupdataset-range", lambda: data.GroupDataset(X, Y, n_classes=1), ValueError, "labels must be in [0, 1)"),
    ("groupdataset-groups-range", lambda: data.GroupDataset(X, Y, Y, n_groups=1), ValueError, "group labels must be in [0, 1)"),
    ("groupdataset-no-groups", lambda: data.GroupDataset(X, Y).group_counts(), ValueError, "needs group labels"),
    ("subset-out-of-range", lambda: data.GroupDataset(X, Y).subset([20]), IndexError, "subset indices must be in [0, 8)"),
    ("linear-rate", lambda: data.make_linear_spurious(spurious_rate=-0.1), ValueError, "spurious_rate must be in [0, 1]"),
    ("linear-size", lambda: data.make_linear_spurious(n_train=0), ValueError, "n_train must be a positive int"),
    ("digits-style", lambda: data.make_spurious_digits(style="blur"), ValueError, "unknown style"),
    ("digits-fractions", lambda: data.make_spurious_digits(fractions=(0.5, 0.5)), ValueError, "fractions must be three"),
    ("sample2d-name", lambda: data.sample_2d("swissroll", 10), ValueError, "unknown 2-D data set"),
    ("logprob2d-shape", lambda: data.log_prob_2d("checkerboard", torch.zeros(5, 3)), ValueError, "shape (N, 2)"),
    ("logprob2d-moons", lambda: data.log_prob_2d("moons", torch.zeros(5, 2)), ValueError, "no closed form"),
    ("loader-missing", lambda: data.load_group_metadata("/nonexistent"), FileNotFoundError, "no metadata.csv"),
    ("mlp-width", lambda: nets.MLP(3, 2, hidden=(0,)), ValueError, "hidden[0] must be a positive int"),
    ("mlp-input", lambda: nets.MLP(3, 2)(torch.randn(2, 4)), ValueError, "expects 3 input features"),
    ("gpt-heads", lambda: nets.TinyGPT(vocab_size=4, d_model=30, n_head=4), ValueError, "divisible"),
    ("gpt-tokens", lambda: nets.TinyGPT(vocab_size=4, block_size=4)(torch.tensor([[1, 9]])), ValueError, "token ids must be in [0, 4)"),
    ("gpt-context", lambda: nets.TinyGPT(vocab_size=4, block_size=4)(torch.zeros(1, 5, dtype=torch.long)), ValueError, "exceeds the context"),
    ("gpt-preset", lambda: nets.TinyGPT.from_preset("gpt-huge", vocab_size=4), ValueError, "unknown preset"),
    ("setmlp-dims", lambda: nets.SetMLP(3, 2, 1)(torch.randn(1, 4, 2), torch.randn(1, 4, 2)), ValueError, "elems must be (B, N, 3)"),
    ("accuracy-length", lambda: metrics.accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 1])), ValueError, "different lengths"),
    ("accuracy-3d", lambda: metrics.accuracy(torch.zeros(2, 2, 2), torch.tensor([0, 1])), ValueError, "(N,) labels or (N, K) scores"),
    ("wga-empty", lambda: metrics.worst_group_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)), ValueError, "is empty"),
    ("ece-not-probs", lambda: metrics.expected_calibration_error(torch.tensor([[2., -1.]]), torch.tensor([0])), ValueError, "probs must lie in [0, 1]"),
    ("ece-bins", lambda: metrics.expected_calibration_error(torch.tensor([[1., 0.]]), torch.tensor([0]), n_bins=0), ValueError, "n_bins"),
    ("nll-range", lambda: metrics.nll(torch.zeros(1, 2), torch.tensor([5])), ValueError, "labels must be in [0, 2)"),
    ("nse-shapes", lambda: metrics.normalized_squared_error(torch.zeros(3), torch.zeros(4), d=2), ValueError, "shapes differ"),
    ("claim-name", lambda: claims.claim("Bad Name", "p", "s", check=bool), ValueError, "chapter.claim"),
    ("claims-unknown", lambda: claims.resolve(["no.such_claim"]), ValueError, "unknown claim(s) ['no.such_claim']"),
    ("run-claims-seeds", lambda: claims.run_claims(seeds=()), ValueError, "seeds must be a non-empty"),
]

@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"
