"""The video learning proof, one `caprl demo --video` per seed: held-out QA accuracy of SFT only and SFT + GRPO, the
video-blind ceiling, and each run's wall and CPU time (the process and its children).

    .venv/bin/python benchmarks/video_proof.py [--seeds 0 1] [--out runs/video-proof] [--threads 2]

Each seed runs as its own process with OMP_WAIT_POLICY=PASSIVE unless the environment sets it: on a machine shared
with other jobs, torch's spinning OpenMP threads otherwise lose most of their time slices (measured 5-15x slower GRPO
steps under load). Prints a Markdown table for docs/train.md and writes OUT/proof.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def one_seed(out: Path, seed: int, threads: int, counts: tuple[int, int, int]) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "caprl_kit.cli",
        "demo",
        "--video",
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--n-train",
        str(counts[0]),
        "--n-val",
        str(counts[1]),
        "--n-test",
        str(counts[2]),
    ]
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads((out / "summary.json").read_text())
    return {"seed": seed, "wall_s": wall, "cpu_s": cpu, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=Path("runs/video-proof"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS) per run")
    ap.add_argument("--counts", type=int, nargs=3, default=[200, 50, 200], metavar=("TRAIN", "VAL", "TEST"))
    args = ap.parse_args()
    rows = [one_seed(args.out / f"seed{s}", s, args.threads, tuple(args.counts)) for s in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proof.json").write_text(json.dumps(rows, indent=2, default=str))
    print("| seed | A0: SFT only | A1: SFT + GRPO (best on val, step) | video-blind ceiling | A1 - A0 | wall | CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ev, train = r["summary"]["eval"], r["summary"]["train"]
        print(
            f"| {r['seed']} | {ev['A0_sft']:.3f} | {ev['A1_rl']:.3f} ({train['best_step']}) | "
            f"{ev['blind_ceiling']:.3f} | {ev['gain']:+.3f} | {r['wall_s'] / 60:.1f} min | {r['cpu_s'] / 60:.1f} min |"
        )
    for r in rows:
        ev = r["summary"]["eval"]
        print(f"seed {r['seed']} by question: SFT {ev['sft']['by_question']}  RL {ev['rl']['by_question']}")
        print(f"seed {r['seed']} samples: SFT {ev['sft']['samples'][0]!r}  RL {ev['rl']['samples'][0]!r}")


if __name__ == "__main__":
    main()
