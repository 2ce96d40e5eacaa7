"The wheel built from the repo installs into a clean virtual environment and imports without nbs/."
import os, subprocess, sys, sysconfig, venv, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (w,) = out.glob("robustlearn-*.whl")
    return w

def test_wheel_contents_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for mod in ("core", "data", "nets", "metrics", "claims"):
        assert f"robustlearn/{mod}.py" in names
    assert not any(n.startswith(("nbs/", "tests/", "tutorials/")) for n in names)
    for dep in ("torch", "numpy", "pandas", "scikit-learn", "matplotlib", "tqdm"):
        assert f"Requires-Dist: {dep}" in meta
    assert "robustlearn = robustlearn.claims:main" in entry

def test_wheel_installs_in_clean_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # the third-party dependencies come from this test's environment (read-only, appended after the venv's own)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = ("import robustlearn, robustlearn.core, robustlearn.claims, robustlearn.data, robustlearn.nets, robustlearn.metrics;"
            "print(robustlearn.__file__)")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert str(env_dir) in r.stdout                            # imported from the wheel, not the checkout
    r = subprocess.run([env_dir / "bin" / "robustlearn", "reproduce", "--list"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def _cut_docstrings(source: str) -> list[str]:
    "Functions and classes whose docstring is followed by more string statements: Python keeps only the first line."
    import ast
    out = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(n) is not None:
            nxt = n.body[1] if len(n.body) > 1 else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                out.append(n.name)
    return out


def test_docstrings_are_not_cut_short():
    "A docstring written as two string statements documents only its first line (in help() and on the site)."
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "robustlearn"
    cut = {f.name: _cut_docstrings(f.read_text()) for f in sorted(root.glob("*.py"))}
    assert {k: v for k, v in cut.items() if v} == {}
    assert _cut_docstrings('def f():\n    "one line\\n"\n    "the rest"\n    return 1\n') == ["f"]   # the check sees the defect
    assert _cut_docstrings('def f():\n    ("one line\\n"\n     "the rest")\n    return 1\n') == []
