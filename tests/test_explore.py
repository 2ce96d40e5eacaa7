"core.explore: the default run everywhere static, sliders and menus in a live notebook."
import pytest
from robustlearn import core


def _plot(rate, heads=2, method="subg", model=None):          # model: a defaulted parameter that is not explored
    _plot.calls.append((rate, heads, method))
    return rate * heads


def _run(monkeypatch, live):
    _plot.calls = []
    monkeypatch.setattr(core, "live_widgets", lambda: live)
    return core.explore(_plot, rate=(0.9, 0.5, 1.0, 0.05), heads=(2, 1, 4, 1), method=("subg", ["erm", "subg", "gdro"]))


def test_static_runs_the_defaults_once(monkeypatch):
    assert _run(monkeypatch, live=False) == pytest.approx(1.8) and _plot.calls == [(0.9, 2, "subg")]


def test_live_builds_one_control_per_explored_parameter_and_displays_results(monkeypatch):
    W = pytest.importorskip("ipywidgets")
    import ipywidgets.widgets.interaction as I
    shown, results = [], []
    monkeypatch.setattr("IPython.display.display", lambda w: shown.append(w))
    monkeypatch.setattr(I, "display", lambda r: results.append(r))           # what the interactive output shows
    assert _run(monkeypatch, live=True) is None
    (box,) = shown
    controls = {c.description: c for c in box.children if isinstance(c, W.ValueWidget)}
    assert set(controls) == {"rate", "heads", "method"}                        # no control for `model`
    r = controls["rate"]
    assert isinstance(r, W.FloatSlider) and (r.value, r.min, r.max, r.step, r.readout_format) == (0.9, 0.5, 1.0, 0.05, ".2f")
    assert isinstance(controls["heads"], W.IntSlider) and controls["heads"].value == 2
    assert isinstance(controls["method"], W.Dropdown) and controls["method"].value == "subg"
    assert _plot.calls[0] == (0.9, 2, "subg") and results[0] == pytest.approx(1.8)   # the first output: the default run
    controls["heads"].value = 4                                               # moving a slider re-runs fn and shows it
    assert _plot.calls[-1] == (0.9, 4, "subg") and results[-1] == pytest.approx(3.6)


def test_live_widgets_needs_a_kernel_and_no_static_flag(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython
    kernel = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel)
    monkeypatch.delenv("IN_TEST", raising=False)
    monkeypatch.delenv("ROBUSTLEARN_STATIC", raising=False)
    assert core.live_widgets()
    monkeypatch.setenv("ROBUSTLEARN_STATIC", "1")
    assert not core.live_widgets()
    monkeypatch.setenv("ROBUSTLEARN_STATIC", "0")
    assert core.live_widgets()
    monkeypatch.setenv("IN_TEST", "1")
    assert not core.live_widgets()
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)                  # plain python
    monkeypatch.delenv("IN_TEST")
    assert not core.live_widgets()
