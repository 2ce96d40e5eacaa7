"""Does ICRM use the context on rotated digits? Ablations of the quick preset's digits task.

Each variant changes one thing from `ICRMExperiment.preset(True, task="digits")` (12 training angles 0, 30, ..., 330;
test angles 15, 45, ..., 345 on held-out images; 1,500 steps; width 64, 2 layers) and reports ERM's error and ICRM's
error against the context size on the test angles, with the ratio the claim `icrm.context_helps_digits` checks
(worst of ICRM at 25 and 50 over ERM; at most 0.8 to hold). Variants run in worker processes of one torch thread.

    python benchmarks/icrm_digits.py [--jobs 2] [--seed 0]
"""
import argparse, time
from concurrent.futures import ProcessPoolExecutor

from robustlearn.icrm import ICRMExperiment

TEST = ICRMExperiment().test_angles      # 15, 45, ..., 345
def angles(step):   # training angles every `step` degrees, never a test angle
    return tuple(a for a in range(0, 360, step) if a not in TEST)

VARIANTS = {        # name -> changes to the quick digits preset
    "quick preset (12 angles, 1,500 steps)": {},
    "4,000 steps": dict(steps=4000),
    "width 128": dict(d_model=128),
    "36 angles (every 10 degrees)": dict(train_angles=angles(10)),
    "60 angles (every 5 degrees)": dict(train_angles=angles(5)),
}

def run(changes: dict, seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from robustlearn.icrm import compare_icrm_erm
    cfg = ICRMExperiment.preset(True, task="digits", **changes)
    t0 = time.perf_counter()
    r = compare_icrm_erm(cfg, seed=seed)
    curve = dict(zip(r["curve"].context, r["curve"].error))
    return dict(n_angles=len(cfg.train_angles), erm=r["erm_error"], curve=curve,
                ratio=max(curve[25], curve[50]) / r["erm_error"], seconds=time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with ProcessPoolExecutor(a.jobs) as ex:
        rows = [(n, ex.submit(run, v, a.seed)) for n, v in VARIANTS.items()]
        rows = [(n, f.result()) for n, f in rows]
    cs = list(rows[0][1]["curve"])
    print(f"rotated digits, seed {a.seed}: test error on unseen angles; ICRM after c unlabeled examples of the angle")
    print(f"{'variant':40s} {'ERM':>6s} " + " ".join(f"{'c=' + str(c):>6s}" for c in cs) + f" {'ratio':>6s} {'s':>5s}")
    for n, r in rows:
        print(f"{n:40s} {r['erm']:6.3f} " + " ".join(f"{r['curve'][c]:6.3f}" for c in cs) + f" {r['ratio']:6.2f} {r['seconds']:5.0f}")

if __name__ == "__main__":
    main()
