"""Multi-token prediction: training throughput and peak memory of naive vs sequential heads (n = 1, 2, 4), and
decoding speed of greedy vs self-speculative decoding (k = 2, 3, 4). Everything is printed as a ratio to the
n = 1 / greedy baseline measured in the same run.

    python benchmarks/mtp.py [--vocab 8192] [--steps 20] [--train-steps 600] [--device cpu]
"""
import argparse, time
import torch
from robustlearn.core import get_device
from robustlearn.mtp import (MTPExperiment, MultiTokenGPT, decoding_stats, induction_run, measure_memory, mtp_backward,
                             mtp_loss)


def train_throughput(n_heads, sequential, vocab, steps, device, batch_size=8, length=256, n_layer=5, d_model=64):
    "Training steps per second (forward, backward, AdamW step) after two warm-up steps."
    torch.manual_seed(0)
    model = MultiTokenGPT(vocab, n_heads=n_heads, n_layer=n_layer, d_model=d_model, block_size=length).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tok = torch.randint(0, vocab, (batch_size, length), device=device)
    def step():
        opt.zero_grad(set_to_none=True)
        if sequential: mtp_backward(model, tok)
        else: mtp_loss(model, tok).backward()
        opt.step()
    for _ in range(2): step()
    if device.type == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    if device.type == "cuda": torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    ap.add_argument("--train-steps", type=int, default=600, help="training steps of the 4-head model used for decoding")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = get_device(a.device)
    print(f"device {device}, vocabulary {a.vocab}, batch 8 x 256 tokens, 5 layers, d_model 64\n")

    print("training: steps/s and peak step memory (separate processes), ratio to n=1 of the same implementation")
    print(f"{'heads':>5} {'impl':>10} {'steps/s':>9} {'x n=1':>7} {'peak MiB':>9} {'x n=1':>7}")
    base = {}
    for sequential in (False, True):
        for n in (1, 2, 4):
            sps = train_throughput(n, sequential, a.vocab, a.steps, device)
            mem = measure_memory(n, sequential, vocab_size=a.vocab, device="cuda" if device.type == "cuda" else "cpu")["peak_mib"]
            if n == 1: base[sequential] = (sps, mem)
            impl = "sequential" if sequential else "naive"
            print(f"{n:>5} {impl:>10} {sps:>9.2f} {sps / base[sequential][0]:>7.2f} {mem:>9.0f} {mem / base[sequential][1]:>7.2f}")

    print(f"\ndecoding: a 4-head model trained {a.train_steps} steps on the induction stories; 100 prompts of 16 tokens, 32 new tokens")
    cfg = MTPExperiment.preset(True, steps=a.train_steps)
    run = induction_run(4, cfg, seed=0, device=device, n_layer=cfg.n_layer + 2)
    st = decoding_stats(run["model"].to(device), run["test"][0][:100, :16].to(device), 32)
    g = st["greedy"]
    n_tok = 100 * 32
    print(f"{'decoder':>10} {'tokens/forward':>15} {'tokens/s':>10} {'speedup':>8}  acceptance by depth")
    print(f"{'greedy':>10} {n_tok / g['forwards']:>15.2f} {n_tok / g['seconds']:>10.0f} {1.0:>8.2f}")
    for k in (2, 3, 4):
        s = st[k]
        print(f"{'spec k=' + str(k):>10} {s['tokens_per_forward']:>15.2f} {n_tok / s['seconds']:>10.0f} {s['speedup']:>8.2f}  "
              + " ".join(f"{p:.2f}" for p in s["acceptance"]) + f"   (mismatches {s['mismatches']})")


if __name__ == "__main__":
    main()
