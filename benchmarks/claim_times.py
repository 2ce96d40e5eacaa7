"""Every claim's time per seed at the quick preset (one job, this machine's threads), against the budget in DESIGN.md:
60 s per claim and seed is the target, 180 s the limit. Claims of one chapter share trained models, so a chapter's
first claim carries the training; the chapter total per seed is what a (chapter, seed) job costs.

    python benchmarks/claim_times.py [NAMES ...] [--seed 0] [--out benchmarks/claim-times] [--readme README.md]

Results are cached under --out (the same cache as `robustlearn reproduce`), so a second run only times what the
code changed since; --force times everything again. With --readme, the table replaces the block between
<!-- claim-times --> and <!-- /claim-times --> in that file.
"""
import argparse, os, platform, re, sys
from pathlib import Path
import torch
from robustlearn.claims import cores, load_chapters, run_claims

TARGET, LIMIT = 60, 180

def table(df) -> str:
    "A markdown table: claim, seconds per seed, verdict, budget; then one line per chapter."
    per_chapter = df.groupby("chapter", sort=False).seconds.sum()
    lines = ["| claim | seconds (seed 0) | chapter total | verdict (seed 0) | budget |", "|---|---|---|---|---|"]
    for r in df.itertuples():
        total = per_chapter[r.chapter]
        budget = "ok" if r.seconds <= TARGET else ("over the 60 s target" if r.seconds <= LIMIT else "**over the 180 s limit**")
        lines.append(f"| `{r.claim}` | {r.seconds:.0f} | {total:.0f} | {r.verdict} | {budget} |")
    return "\n".join(lines)

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/claim-times")
    p.add_argument("--force", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="jobs at a time (default 1: each claim timed alone)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: every core)")
    p.add_argument("--readme", help="write the table into this file between the claim-times markers")
    a = p.parse_args()
    load_chapters()
    threads = a.threads or cores()
    df = run_claims(a.names or None, seeds=(a.seed,), device="cpu", out=a.out, force=a.force, progress=True, jobs=a.jobs, threads=threads)
    md = table(df)
    total = df.seconds.sum()
    head = (f"Quick preset, seed {a.seed}, {a.jobs} job(s) at a time, {threads} torch thread(s) each ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}: {total / 60:.1f} minutes for these {len(df)} claims once.")
    print(head, md, sep="\n\n")
    if a.readme:
        path = Path(a.readme); text = path.read_text()
        block = f"<!-- claim-times -->\n{head}\n\n{md}\n<!-- /claim-times -->"
        if "<!-- claim-times -->" not in text: sys.exit(f"{path} has no <!-- claim-times --> marker")
        path.write_text(re.sub(r"<!-- claim-times -->.*?<!-- /claim-times -->", lambda m: block, text, flags=re.S))
        print(f"wrote the table into {path}")

if __name__ == "__main__":
    main()
