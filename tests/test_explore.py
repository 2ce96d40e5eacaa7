"core.explore: the default run everywhere static, sliders and menus in a live notebook."
import pytest
from robustlearn import core


def _plot(rate, heads=2, method="subg"):
    _plot.calls.append((rate, heads, method))
    return rate * heads


def _run(monkeypatch, live):
    _plot.calls = []
    monkeypatch.setattr(core, "live_widgets", lambda: live)
    return core.explore(_plot, rate=(0.9, 0.5, 1.0, 0.05), heads=(2, 1, 4, 1), method=("subg", ["erm", "subg", "gdro"]))


def test_static_runs_the_defaults_once(monkeypatch):
    assert _run(monkeypatch, live=False) == pytest.approx(1.8) and _plot.calls == [(0.9, 2, "subg")]


def test_live_builds_one_control_per_parameter_at_its_default(monkeypatch):
    W = pytest.importorskip("ipywidgets")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda w: shown.append(w))
    assert _run(monkeypatch, live=True) is None
    (box,) = shown
    controls = {c.description: c for c in box.children if hasattr(c, "description") and c.description}
    assert isinstance(controls["rate"], W.FloatSlider) and (controls["rate"].value, controls["rate"].min,
                                                             controls["rate"].max, controls["rate"].step) == (0.9, 0.5, 1.0, 0.05)
    assert isinstance(controls["heads"], W.IntSlider) and controls["heads"].value == 2
    assert isinstance(controls["method"], W.Dropdown) and controls["method"].value == "subg"
    assert _plot.calls[0] == (0.9, 2, "subg")               # the first output is the default run
    controls["heads"].value = 4                               # moving a slider re-runs fn
    assert _plot.calls[-1] == (0.9, 4, "subg")


def test_static_environment_variable_and_test_mode_turn_widgets_off(monkeypatch):
    monkeypatch.delenv("IN_TEST", raising=False)
    monkeypatch.setenv("ROBUSTLEARN_STATIC", "1")
    assert not core.live_widgets()
    monkeypatch.setenv("ROBUSTLEARN_STATIC", "0")
    assert not core.live_widgets()                            # pytest is not a Jupyter kernel
