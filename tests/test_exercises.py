"Every registered exercise passes its own reference and catches its typical mistake, naming the input."
import pytest
from robustlearn.claims import load_chapters
from robustlearn.exercises import EXERCISES, check, get_exercise, starter

load_chapters()          # imports every chapter, which registers its exercises
NAMES = sorted(EXERCISES)

def test_every_chapter_has_two_exercises():
    chapters = {c.chapter for c in load_chapters().values()}
    counts = {ch: sum(n.startswith(ch + ".") for n in NAMES) for ch in chapters}
    assert all(v >= 2 for v in counts.values()), counts

@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_and_mistake_fails(name, capsys):
    ex = get_exercise(name)
    assert check(name, ex.reference)
    assert "all" in capsys.readouterr().out
    assert ex.mistake is not None, f"{name} records no typical mistake"
    assert not check(name, ex.mistake)
    out = capsys.readouterr().out
    assert "input:" in out and "expected:" in out and f"✗ {name}: case" in out

@pytest.mark.parametrize("name", NAMES)
def test_starter_runs_and_fails_the_check(name, capsys):
    src = starter(name)
    ns = {"check": check}
    exec(src, ns)              # the starter's function raises NotImplementedError: the check says so
    assert "raised:   NotImplementedError" in capsys.readouterr().out

def test_unknown_exercise_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown exercise 'nope.nope'; registered: "):
        check("nope.nope", print)

@pytest.mark.parametrize("name", NAMES)
def test_unfinished_or_odd_answers_are_reported_not_crashes(name, capsys):
    assert not check(name, lambda *a: None)                  # a starter whose `return` is missing
    assert "returned None" in capsys.readouterr().out
    assert not check(name, lambda *a: "not a number", verbose=False)
