"""What lets the in-context transformer leave its plateau within the quick budget, and what the set-MLP needs.

Each transformer variant changes one thing from the chosen setting (`ICLExperiment`'s quick preset: 3 layers, width
64, batch 128, AdamW at lr 1e-3 with 250 warm-up steps, gradient clipping at 1.0, cosine decay, 3,000 steps, the
curriculum) or is the old quick preset (lr 3e-4, no warm-up, no clipping, 6,000 steps). It reports the test NSE
averaged over k = d..2d (500 prompts), the first logged step (every 250) at which it is at most 0.1 on the 200
monitor prompts, and the training seconds. The set-MLP rows compare the old width (256, 6,000 steps) with the
chosen one (128, 3,000 steps) on the same 20,000 fixed prompts, by the excess NSE over least squares (k = 1..2d).
Runs variants in parallel worker processes of one torch thread each.

    python benchmarks/icl_recipe.py [--jobs 2] [--seed 0] [--only NAME ...]
"""
import argparse, dataclasses, json, time
from concurrent.futures import ProcessPoolExecutor

import torch

from robustlearn.icl import ICLExperiment

_Q = ICLExperiment.preset(True)
TF = {                                                        # name -> changes from the chosen setting
    "chosen (quick preset)": {},
    "old quick preset (lr 3e-4, no warm-up or clipping, 6000 steps)": dict(lr=3e-4, warmup=0, grad_clip=None, steps=6000),
    "no warm-up or clipping": dict(warmup=0, grad_clip=None),
    "lr 2e-3": dict(lr=2e-3),
    "batch 64": dict(batch_size=64),
    "2 layers": dict(n_layer=2),
}
MLP = {
    "set-MLP, old (width 256, 6000 steps)": dict(setmlp_hidden=256, setmlp_d_set=256, steps=6000),
    "set-MLP, chosen (width 128, 3000 steps)": {},
}

ORDER = [*list(TF)[1:2], *list(TF)[:1], *list(MLP)[:1], *list(TF)[2:], *list(MLP)[1:]]   # the long runs first

def run(name: str, seed: int) -> dict:
    torch.set_num_threads(1)
    from robustlearn.core import set_seed
    from robustlearn.icl import (Curriculum, ICLSetMLP, ICLTransformer, error_curve, excess_error, monitor_nse,
                                 train_icl)
    is_tf = name in TF
    c = dataclasses.replace(_Q, **(TF[name] if is_tf else MLP[name]))
    set_seed(seed)
    ev = dict(eval_fn=monitor_nse(c.d, c.n_points, seed), eval_every=250, lr_schedule="cosine", seed=seed, progress=False)
    t0 = time.perf_counter()
    if is_tf:
        model = ICLTransformer(c.d, c.max_points, c.n_layer, c.n_head, c.d_model)
        cur = Curriculum(c.d, c.n_points, d_start=2, points_start=5, every=c.curriculum_every)
        h = train_icl(model, d=c.d, n_points=c.n_points, steps=c.steps, batch_size=c.batch_size, lr=c.lr, curriculum=cur,
                      warmup=c.warmup, grad_clip=c.grad_clip, **ev)
    else:
        model = ICLSetMLP(c.d, None, c.setmlp_hidden, c.setmlp_depth, c.setmlp_d_set)
        h = train_icl(model, d=c.d, n_points=c.n_points, steps=c.setmlp_steps or c.steps, batch_size=c.setmlp_batch_size, lr=c.setmlp_lr,
                      prompts=c.setmlp_prompts, **ev)
    secs = time.perf_counter() - t0
    curves = {"m": error_curve(model, c.d, c.n_points, n_prompts=c.n_prompts, seed=seed),
              "least_squares": error_curve("least_squares", c.d, c.n_points, n_prompts=c.n_prompts, seed=seed)}
    first = next((e["step"] for e in h.evals if e["nse_d_2d"] <= 0.1), None)
    return dict(name=name, seed=seed, secs=round(secs), steps=c.steps if is_tf else (c.setmlp_steps or c.steps), batch=c.batch_size if is_tf else c.setmlp_batch_size,
                nse_d_2d=round(float(curves["m"].nse[c.d:2 * c.d + 1].mean()), 3),
                excess=round(excess_error(curves, c.d)["m"], 3), first_step_at_0_1=first,
                curve=[(e["step"], round(e["nse_d_2d"], 3)) for e in h.evals])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="names of variants (default: all)")
    ap.add_argument("--out", help="also write the rows as JSON lines to this file")
    a = ap.parse_args()
    names = a.only or ORDER
    unknown = [n for n in names if n not in TF and n not in MLP]
    if unknown: ap.error(f"unknown variants {unknown}: expected names from {[*TF, *MLP]}")
    with ProcessPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(run, names, [a.seed] * len(names)))
    print(f"seed {a.seed}; NSE over k = d..2d (test, 500 prompts); excess = NSE - least squares' over k = 1..2d")
    print(f"{'variant':<66} {'steps':>6} {'batch':>5} {'NSE d..2d':>9} {'excess':>7} {'<=0.1 at':>8} {'train s':>7}")
    for r in rows:
        print(f"{r['name']:<66} {r['steps']:>6} {r['batch']:>5} {r['nse_d_2d']:>9.3f} {r['excess']:>7.3f} "
              f"{str(r['first_step_at_0_1'] or 'never'):>8} {r['secs']:>7}")
    if a.out:
        with open(a.out, "w") as f: f.writelines(json.dumps(r) + "\n" for r in rows)

if __name__ == "__main__":
    main()
