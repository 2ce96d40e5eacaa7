"`robustlearn reproduce` at scale: parallel jobs and submitit give the serial numbers, the cache, aggregation, failures."
import json, time
import pytest, torch
from robustlearn import claims
from robustlearn.claims import run_claims, run_jobs, JobError

@pytest.fixture
def registry(monkeypatch):
    reg = {}
    monkeypatch.setattr(claims, "REGISTRY", reg)
    monkeypatch.setattr(claims, "load_chapters", lambda: reg)
    return reg

def _toy_claims():
    "Two claims of one chapter sharing nothing, one of another; the first trains a small net with torch (threads matter)."
    @claims.claim("toy.trains", paper="-", statement="a tiny regression learns", check=lambda m: m["loss"] < 1.0,
                  detail="loss {loss:.4f}")
    def _trains(quick, seed, device):
        x = torch.randn(512, 32); y = x @ torch.randn(32, 1)
        net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        for _ in range(60):
            opt.zero_grad(); loss = ((net(x) - y) ** 2).mean(); loss.backward(); opt.step()
        return {"loss": loss.item(), "w": net[0].weight.sum().item()}
    @claims.claim("toy.exact", paper="-", statement="no mismatches on any seed", check=lambda m: m["mismatches"] == 0,
                  aggregate="max")
    def _exact(quick, seed, device): return {"mismatches": float(seed == 1) * 7}
    @claims.claim("other.coin", paper="-", statement="heads near 1/2", check=lambda m: abs(m["heads"] - 0.5) < 0.1)
    def _coin(quick, seed, device): return {"heads": torch.rand(1000).lt(0.5).float().mean().item()}

def _numbers(df):
    return {r.claim: (r.values, r.per_seed, r.verdict) for r in df.itertuples()}

def test_jobs_and_local_launcher_match_serial(registry, tmp_path):
    _toy_claims()
    serial = run_claims(seeds=(0, 1), device="cpu")
    pool = run_claims(seeds=(0, 1), device="cpu", jobs=2)
    local = run_claims(seeds=(0, 1), device="cpu", jobs=2, launcher="local", out=tmp_path)
    assert list(serial.claim) == list(pool.claim) == list(local.claim) == ["other.coin", "toy.exact", "toy.trains"]
    assert _numbers(serial) == _numbers(pool) == _numbers(local)     # bit for bit, whatever the threads per job
    assert (tmp_path / "submitit").is_dir()                           # the jobs really went through submitit

def test_aggregate_max_reports_the_failing_seed(registry):
    _toy_claims()
    df = run_claims(["toy.exact"], seeds=(0, 1, 2), device="cpu").iloc[0]
    assert df.verdict == "fails" and df["values"] == {"mismatches": 7.0}   # the median would have said 0
    assert df.per_seed_holds == [True, False, True] and df.seeds == "2/3 hold"

def test_cache_reuses_and_force_recomputes(registry, tmp_path, monkeypatch):
    _toy_claims()
    first = run_claims(seeds=(0, 1), device="cpu", out=tmp_path)
    assert first.cached.sum() == 0
    again = run_claims(seeds=(0, 1), device="cpu", out=tmp_path)
    assert list(again.cached) == [2, 2, 2]                               # nothing recomputed
    assert _numbers(again) == _numbers(first)
    assert run_claims(seeds=(0, 1), device="cpu", out=tmp_path, force=True).cached.sum() == 0
    assert run_claims(seeds=(0, 1, 2), device="cpu", out=tmp_path).cached.sum() == 6   # only seed 2 is new
    monkeypatch.setattr(claims, "code_fingerprint", lambda module=None: "edited code")
    assert run_claims(seeds=(0, 1), device="cpu", out=tmp_path).cached.sum() == 0      # other code: nothing reused

def test_interrupted_run_keeps_what_finished(registry, tmp_path):
    _toy_claims()
    seen = []
    def stop_after_first(line):
        seen.append(line)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_claims(seeds=(0,), device="cpu", out=tmp_path, log=stop_after_first)
    report = json.loads((tmp_path / "report.json").read_text())       # written before the interruption
    assert [c["verdict"] for c in report["claims"]] == ["holds", "pending", "pending"]
    again = run_claims(seeds=(0,), device="cpu", out=tmp_path)
    assert list(again.cached) == [1, 0, 0]

def test_failed_job_is_a_row_with_its_log(registry, tmp_path):
    @claims.claim("bad.crashes", paper="-", statement="raises", check=lambda m: True)
    def _crash(quick, seed, device): raise RuntimeError("boom in a job")
    @claims.claim("good.fine", paper="-", statement="fine", check=lambda m: True)
    def _fine(quick, seed, device): return {"x": 1.0}
    df = run_claims(seeds=(0,), device="cpu", out=tmp_path, launcher="local", jobs=2).set_index("claim")
    assert df.loc["bad.crashes", "verdict"] == "error" and "boom in a job" in df.loc["bad.crashes", "detail"]
    assert df.loc["good.fine", "verdict"] == "holds"

def test_submitit_failed_job_reports_its_log(tmp_path):
    def _raises(x): raise ValueError(f"bad x {x}")
    res = dict(run_jobs(_raises, [(3,)], launcher="local", folder=tmp_path))
    assert isinstance(res[0], JobError) and "bad x 3" in res[0].error
    assert res[0].log.endswith(".err") and "bad x 3" in open(res[0].log).read()

def test_slurm_without_a_cluster_is_a_clear_error(tmp_path, capsys):
    import shutil
    if shutil.which("srun"): pytest.skip("a SLURM cluster is here")
    assert claims.main(["reproduce", "flow.likelihood_is_exact", "--launcher", "slurm", "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 2
    assert "slurm cluster" in capsys.readouterr().err

def test_bad_job_options(tmp_path):
    with pytest.raises(ValueError, match="jobs must be a positive int"): list(run_jobs(print, [()], jobs=0))
    with pytest.raises(ValueError, match="needs a folder"): list(run_jobs(print, [()], launcher="local"))
    with pytest.raises(ValueError, match="bad cluster parameters"):
        list(run_jobs(print, [()], launcher="local", folder=tmp_path, cluster={"no_such": 1}))

def test_cli_cluster_options(tmp_path, capsys):
    assert claims.main(["reproduce", "--jobs", "0", "--list"]) == 2
    assert claims.main(["reproduce", "--cluster-config", str(tmp_path / "missing.toml"), "--list"]) == 2
    (tmp_path / "c.json").write_text("[1, 2]")
    assert claims.main(["reproduce", "--cluster-config", str(tmp_path / "c.json"), "--list"]) == 2
    assert "submitit parameters" in capsys.readouterr().err

def test_in_process_jobs_keep_the_callers_threads():
    "A sweep inside a claim job (run_jobs in run_jobs) must not undo the job's share of the cores."
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert dict(run_jobs(torch.get_num_threads, [()])) == {0: 1}
    finally: torch.set_num_threads(old)

def test_slurm_needs_an_explicit_device(registry):
    _toy_claims()
    with pytest.raises(ValueError, match="--launcher slurm needs --device cpu or --device cuda"):
        run_claims(seeds=(0,), launcher="slurm")

def test_error_rows_point_to_their_traceback(registry, tmp_path):
    @claims.claim("bad.raises", paper="-", statement="raises", check=lambda m: True)
    def _raise(quick, seed, device): raise ZeroDivisionError("deep inside")
    row = run_claims(seeds=(0,), device="cpu", out=tmp_path).iloc[0]
    assert row.verdict == "error" and "ZeroDivisionError: deep inside" in open(row.log).read()

def test_claims_outside_the_package_are_fingerprinted_with_their_source(registry):
    "A claim from a notebook or a script: editing its function or its check invalidates its cache."
    def one(quick, seed, device): return {"x": 1.0}
    def two(quick, seed, device): return {"x": 2.0}
    a = claims.Claim("nb.x", "-", "s", one, lambda m: True)
    b = claims.Claim("nb.x", "-", "s", two, lambda m: True)
    c = claims.Claim("nb.x", "-", "s", one, lambda m: m["x"] > 0)
    assert claims.claim_fingerprint(a) == claims.claim_fingerprint(claims.Claim("nb.x", "-", "s", one, a.check))
    assert len({claims.claim_fingerprint(a), claims.claim_fingerprint(b), claims.claim_fingerprint(c)}) == 3

def test_numbers_do_not_depend_on_jobs_because_threads_are_fixed(registry, monkeypatch):
    "Threads per job stay at `threads` whatever `jobs` is: a job sees the same thread count serially and in a pool."
    @claims.claim("toy.threads", paper="-", statement="reports its threads", check=lambda m: True)
    def _t(quick, seed, device): return {"threads": float(torch.get_num_threads())}
    serial = run_claims(seeds=(0,), device="cpu").iloc[0]["values"]
    pool = run_claims(seeds=(0,), device="cpu", jobs=2).iloc[0]["values"]
    assert serial == pool == {"threads": 1.0}
    assert run_claims(seeds=(0,), device="cpu", threads=2).iloc[0]["values"] == {"threads": 2.0}

def test_stopping_a_pool_run_does_not_wait_for_running_jobs():
    "Ctrl-C (or leaving the loop) terminates the workers instead of waiting for their long jobs to end."
    def nap(s): time.sleep(s); return s
    t0 = time.perf_counter()
    gen = run_jobs(nap, [(0.0,), (60.0,), (60.0,), (60.0,)], jobs=2)
    assert next(gen) == (0, 0.0)
    gen.close()                                       # what an exception in the consumer does
    assert time.perf_counter() - t0 < 30              # not the 60 s a waiting shutdown would take
    import multiprocessing
    time.sleep(1)
    assert not [p for p in multiprocessing.active_children() if p.is_alive() and "SpawnProcess" in p.name]   # workers stopped
