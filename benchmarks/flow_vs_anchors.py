"""robustlearn's flow matching against facebookresearch/flow_matching and torchcfm, side by side, in one process.

The same VelocityMLP, batch, data (checkerboard), optimizer and number of steps for every implementation;
only the path/coupling code (training) and the solver (sampling, likelihood) differ. Prints times and the
ratio robustlearn / anchor (below 1: robustlearn is faster), plus sample quality at equal steps. The
implementations are interleaved (training chunk by chunk, solvers repeat by repeat) so that none is
systematically first; times are medians (solvers) or totals (training). CPU timings only here: on CUDA
add synchronisation before reading the clock.
Needs the anchors: `make bench` installs them (torchcfm without its torchdyn dependency, which would
pull torchvision and a second torch build).

    python benchmarks/flow_vs_anchors.py [--steps 1000] [--batch 256] [--device cpu] [--repeats 3]
"""
import argparse, math, statistics, time
import torch

from robustlearn.core import get_device, set_seed
from robustlearn.data import sample_2d
from robustlearn.metrics import energy_distance
from robustlearn import flow as rl

def make_trainer(loss_of_batch, batch, device, seed=0):
    "A fresh VelocityMLP and a function running n training steps on it; returns (model, run)."
    set_seed(seed)
    model = rl.VelocityMLP(2, hidden=256, depth=4).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    def run(n):
        for _ in range(n):
            x1 = sample_2d("checkerboard", batch, gen).to(device)
            loss = loss_of_batch(model, x1)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return model, run

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000); ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto"); ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=2000); ap.add_argument("--n-nll", type=int, default=500)
    a = ap.parse_args()
    device = get_device(a.device)
    torch.set_num_threads(torch.get_num_threads())
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    # --- training: the loss of one batch, each library's own path code ---
    rl_path = rl.AffinePath("cond_ot")
    def rl_loss(m, x1): return rl.flow_matching_loss(m, x1, path=rl_path)
    fm_path = AffineProbPath(scheduler=CondOTScheduler())
    def fm_loss(m, x1):
        x0 = torch.randn_like(x1); t = torch.rand(len(x1), device=x1.device)
        s = fm_path.sample(t=t, x_0=x0, x_1=x1)
        return ((m(s.x_t, s.t) - s.dx_t) ** 2).mean()
    cfm = ConditionalFlowMatcher(sigma=0.0)
    def cfm_loss(m, x1):
        x0 = torch.randn_like(x1)
        t, xt, ut = cfm.sample_location_and_conditional_flow(x0, x1)
        return ((m(xt, t) - ut) ** 2).mean()

    # interleave the implementations chunk by chunk, so that none is always first (warm-up, a busy core)
    models, runs, train_time = {}, {}, {}
    for name, loss in (("robustlearn", rl_loss), ("flow_matching", fm_loss), ("torchcfm", cfm_loss)):
        models[name], runs[name] = make_trainer(loss, a.batch, device); train_time[name] = 0.0
    chunks = 10
    for _ in range(chunks):
        for name in runs:
            t0 = time.perf_counter(); runs[name](a.steps // chunks); train_time[name] += time.perf_counter() - t0
    # --- sampling and likelihood: robustlearn's solvers vs flow_matching's ODESolver (torchcfm has none without torchdyn) ---
    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):   # adaptive solvers step just past the ends, as in robustlearn.flow.velocity_fn
            t = t.clamp(0, 1)
            return self.model(x, t.expand(len(x)) if t.dim() == 0 else t)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(a.n_samples, 2, generator=gen).to(device)
    data = sample_2d("checkerboard", a.n_samples, gen)
    x_nll = sample_2d("checkerboard", a.n_nll, gen).to(device)
    fns = {}
    shared = models["robustlearn"].eval()        # solvers are timed on one and the same field (adaptive steps depend on it)
    for name in ("robustlearn", "flow_matching"):
        m = shared
        if name == "robustlearn":
            fns[name] = dict(euler=lambda m=m: rl.sample(m, x0, steps=100, method="euler"),
                             dopri5=lambda m=m: rl.sample(m, x0, method="dopri5"),
                             nll=lambda m=m: -rl.log_likelihood(m, x_nll, steps=100, method="midpoint").mean().item())
        else:
            solver = ODESolver(velocity_model=Wrapped(m))
            log_p0 = lambda x: rl.standard_normal_log_prob(x)
            fns[name] = dict(euler=lambda s=solver: s.sample(x_init=x0, step_size=0.01, method="euler"),
                             dopri5=lambda s=solver: s.sample(x_init=x0, step_size=None, method="dopri5"),
                             nll=lambda s=solver: -s.compute_likelihood(x_1=x_nll, log_p0=log_p0, step_size=0.01, method="midpoint",
                                                                        exact_divergence=True)[1].mean().item())
    times, outs = {}, {}
    for what in ("euler", "dopri5", "nll"):
        samples = {name: [] for name in fns}
        for name in fns: fns[name][what]()                                # warm-up
        for _ in range(a.repeats):                                        # interleaved repeats
            for name in fns:
                t0 = time.perf_counter()
                with torch.set_grad_enabled(what == "nll"): outs[(name, what)] = fns[name][what]()
                samples[name].append(time.perf_counter() - t0)
        for name in fns: times[(name, what)] = statistics.median(samples[name])
    # quality of each library's *training*, all measured with the same solver (robustlearn's)
    quality = {}
    for name, m in models.items():
        xs = rl.sample(m.eval(), x0, steps=100, method="euler")
        quality[name] = (energy_distance(xs.cpu(), data), -rl.log_likelihood(m, x_nll, steps=100, method="midpoint").mean().item())
    solver_agree = (outs[("robustlearn", "euler")] - outs[("flow_matching", "euler")]).abs().max().item()
    print(f"\ndevice {device}, torch {torch.__version__}, {a.steps} training steps, batch {a.batch}, checkerboard\n")
    print(f"{'measure':28s} {'robustlearn':>12s} {'flow_matching':>14s} {'torchcfm':>10s}   ratios rl/fm, rl/cfm (time; <= 1.05 is the target)")
    tr = {n: a.steps / train_time[n] for n in train_time}
    print(f"{'train step time (ms)':28s} {1e3 / tr['robustlearn']:12.2f} {1e3 / tr['flow_matching']:14.2f} {1e3 / tr['torchcfm']:10.2f}"
          f"   {tr['flow_matching'] / tr['robustlearn']:.2f}, {tr['torchcfm'] / tr['robustlearn']:.2f}")
    for what, label in (("euler", "Euler-100 sampling (ms)"), ("dopri5", "dopri5 sampling (ms)"), ("nll", "NLL, midpoint-100 (ms)")):
        r, f = times[("robustlearn", what)], times[("flow_matching", what)]
        print(f"{label:28s} {1e3 * r:12.1f} {1e3 * f:14.1f} {'n/a':>10s}   {r / f:.2f}, n/a")
    print(f"{'(solvers on one field: max |Euler-100 sample difference| = ' + format(solver_agree, '.1e') + ')':s}")
    print(f"{'energy distance to data':28s} {quality['robustlearn'][0]:12.4f} {quality['flow_matching'][0]:14.4f} {quality['torchcfm'][0]:10.4f}   (lower is better)")
    print(f"{'held-out NLL (nats)':28s} {quality['robustlearn'][1]:12.3f} {quality['flow_matching'][1]:14.3f} {quality['torchcfm'][1]:10.3f}   (entropy log 8 = {math.log(8):.3f})")

if __name__ == "__main__":
    main()
