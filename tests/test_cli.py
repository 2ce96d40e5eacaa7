"The `robustlearn` command: help, list, unknown names, the empty registry, exit codes."
import subprocess, sys, json
import pytest
from robustlearn import claims

def cli(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from robustlearn.claims import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=600)

def test_help():
    r = cli("reproduce", "--help")
    assert r.returncode == 0 and "--full" in r.stdout and "--seeds" in r.stdout

def test_no_command_is_usage_error():
    assert cli().returncode == 2

def test_list_names_every_claim():
    r = cli("reproduce", "--list")
    assert r.returncode == 0
    reg = claims.load_chapters()
    for name in reg: assert name in r.stdout

def test_unknown_name_exits_2_with_valid_names():
    r = cli("reproduce", "nonexistent")
    assert r.returncode == 2
    assert "unknown claim(s) ['nonexistent']" in r.stderr
    for name in claims.load_chapters(): assert name in r.stderr

def test_bad_option_exits_2():
    assert cli("reproduce", "--device", "tpu").returncode == 2
    assert cli("reproduce", "--seeds", "0").returncode == 2

def test_empty_registry_says_so(monkeypatch, capsys):
    monkeypatch.setattr(claims, "REGISTRY", {})
    monkeypatch.setattr(claims, "load_chapters", lambda: claims.REGISTRY)
    assert claims.main(["reproduce"]) == 0
    assert "No claims are registered yet" in capsys.readouterr().out

def test_runner_writes_reports_and_exit_codes(monkeypatch, tmp_path, capsys):
    reg = {}
    monkeypatch.setattr(claims, "REGISTRY", reg)
    monkeypatch.setattr(claims, "load_chapters", lambda: reg)
    @claims.claim("toy.passes", paper="-", statement="x is 1", check=lambda m: m["x"] == 1, detail="x={x}")
    def _p(quick, seed, device): return {"x": 1}
    @claims.claim("toy.median", paper="-", statement="median of seed parities", check=lambda m: m["odd"] < 0.5)
    def _m(quick, seed, device): return {"odd": float(seed % 2)}
    assert claims.main(["reproduce", "--seeds", "3", "--device", "cpu", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [c["verdict"] for c in report["claims"]] == ["holds", "holds"]
    assert report["claims"][0]["measured"] == {"odd": 0.0}     # median of 0, 1, 0
    assert "2 of 2 claims hold" in (tmp_path / "report.md").read_text()
    @claims.claim("toy.fails", paper="-", statement="never", check=lambda m: False)
    def _f(quick, seed, device): return {"y": 0}
    assert claims.main(["reproduce", "toy", "--seeds", "1", "--device", "cpu", "--out", str(tmp_path)]) == 1
    assert "fails" in capsys.readouterr().out

def test_list_works_without_the_resource_module():
    "Windows has no `resource` module: `robustlearn reproduce --list` imports every chapter without it."
    code = "import sys; sys.modules['resource'] = None; from robustlearn.claims import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "reproduce", "--list"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in claims.load_chapters(): assert name in r.stdout
