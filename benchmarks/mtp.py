"""Multi-token prediction: training throughput and peak memory of naive vs sequential heads (n = 1, 2, 4), and
decoding speed of greedy vs self-speculative decoding (k = 2, 3, 4). Everything is printed as a ratio to the
n = 1 / greedy baseline measured in the same run.

    python benchmarks/mtp.py [--vocab 8192] [--steps 20] [--train-steps 600] [--prompts 50] [--layers 12] [--device cpu] [--skip-training]

Decoding: a 4-head model (a trunk of layers - 4 blocks, one block per head) trained on the children's stories; both
decoders with a KV cache (the baseline is cached greedy decoding) and both without.
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
    ap.add_argument("--prompts", type=int, default=50, help="test prompts decoded (16 tokens each, 64 new tokens)")
    ap.add_argument("--train-steps", type=int, default=600, help="training steps of the 4-head model used for decoding")
    ap.add_argument("--layers", type=int, default=12, help="total depth of the 4-head decoding model (trunk = layers - 4)")
    ap.add_argument("--skip-training", action="store_true", help="only the decoding benchmark")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = get_device(a.device)
    print(f"device {device}, vocabulary {a.vocab}, batch 8 x 256 tokens, 5 layers, d_model 64\n")

    if not a.skip_training: training(a, device)
    decoding(a, device)


def training(a, device):
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



def decoding(a, device):
    print(f"\ndecoding: a 4-head model, {a.layers} layers (trunk {a.layers - 4}), trained {a.train_steps} steps on the children's "
          f"stories; {a.prompts} prompts of 16 tokens, 64 new tokens each")
    cfg = MTPExperiment.preset(True, steps=a.train_steps)
    run = induction_run(4, cfg, seed=0, device=device, n_layer=a.layers)
    model, prompts, n_new = run["model"].to(device), run["test"][0][:a.prompts, :16].to(device), 64
    n_tok = len(prompts) * n_new
    st = {c: decoding_stats(model, prompts, n_new, cache=c) for c in (True, False)}
    base = st[True]["greedy"]["seconds"]
    print(f"{'decoder':>10} {'cache':>6} {'tokens/forward':>15} {'tokens/s':>10} {'x cached greedy':>16}  acceptance by depth")
    for c in (True, False):
        g = st[c]["greedy"]
        print(f"{'greedy':>10} {str(c):>6} {n_tok / g['forwards']:>15.2f} {n_tok / g['seconds']:>10.0f} {base / g['seconds']:>16.2f}"
              f"   (mismatches against uncached greedy {g['mismatches']}, at float32 ties {g['ties']})")
        for k in (2, 3, 4):
            s = st[c][k]
            print(f"{'spec k=' + str(k):>10} {str(c):>6} {s['tokens_per_forward']:>15.2f} {n_tok / s['seconds']:>10.0f} "
                  f"{base / s['seconds']:>16.2f}  " + " ".join(f"{p:.2f}" for p in s["acceptance"]) + f"   (mismatches {s['mismatches']}, at ties {s['ties']})")


if __name__ == "__main__":
    main()
