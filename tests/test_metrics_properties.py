"Property tests of the metrics (hypothesis)."
import math
import numpy as np, torch
from hypothesis import given, settings, strategies as st
from robustlearn import metrics

@st.composite
def labelled(draw, max_n=60):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(2, 4)); G = draw(st.integers(1, 5))
    ints = lambda hi: st.lists(st.integers(0, hi - 1), min_size=n, max_size=n)
    return torch.tensor(draw(ints(k))), torch.tensor(draw(ints(k))), torch.tensor(draw(ints(G)))

@settings(max_examples=200, deadline=None)
@given(labelled())
def test_worst_group_is_min_of_groups(data):
    pred, y, g = data
    accs = metrics.group_accuracies(pred, y, g)
    wga = metrics.worst_group_accuracy(pred, y, g)
    present = torch.bincount(g) > 0
    assert 0.0 <= wga <= 1.0
    assert wga == accs[present].min().item()
    assert wga <= metrics.accuracy(pred, y) + 1e-12            # the mean of groups is at least their min
    assert accs[~present].isnan().all()

@settings(max_examples=200, deadline=None)
@given(labelled())
def test_accuracy_is_weighted_mean_of_group_accuracies(data):
    pred, y, g = data
    accs = metrics.group_accuracies(pred, y, g)
    counts = torch.bincount(g).double()
    present = counts > 0
    assert math.isclose((accs[present] * counts[present]).sum().item() / len(y), metrics.accuracy(pred, y), abs_tol=1e-12)

@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6), st.floats(0.2, 4.0))
def test_ece_of_calibrated_predictor_is_small(seed, k, temp):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(temp * torch.randn(20000, k, generator=g, dtype=torch.float64), 1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)        # labels drawn from the predicted probabilities
    assert metrics.expected_calibration_error(p, y) < 0.03

@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(2, 5), st.integers(0, 1000))
def test_ece_bounds_and_overconfidence(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, k, (n,), generator=g)
    ece = metrics.expected_calibration_error(p, y)
    assert 0.0 <= ece <= 1.0
    # a one-hot predictor that is always wrong has ECE 1
    wrong = torch.nn.functional.one_hot((y + 1) % k, k).double()
    assert math.isclose(metrics.expected_calibration_error(wrong, y), 1.0)

@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(2, 6), st.integers(0, 1000))
def test_nll_matches_cross_entropy_and_probabilities(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    ref = torch.nn.functional.cross_entropy(logits, y).item()
    assert math.isclose(metrics.nll(logits, y), ref, rel_tol=1e-9)
    assert math.isclose(metrics.nll(torch.softmax(logits, 1), y, from_logits=False), ref, rel_tol=1e-9)

def test_numpy_inputs_are_accepted():
    assert metrics.accuracy(np.array([0, 1]), np.array([0, 0])) == 0.5

def test_single_logit_scores_are_thresholded_at_zero():
    "A binary model with one logit per example gives (N, 1) scores: class 1 where the logit is positive (not argmax = 0)."
    assert metrics.accuracy([[2.], [-1.], [3.]], [1, 0, 1]) == 1.0
    assert metrics.predicted_labels(torch.tensor([[0.5], [0.0], [-2.0]])).tolist() == [1, 0, 0]
    assert metrics.worst_group_accuracy([[2.], [-1.], [3.], [-4.]], [1, 0, 0, 0], [0, 0, 1, 1]) == 0.5
