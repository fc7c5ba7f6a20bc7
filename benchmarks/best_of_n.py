"""Best-of-n recaptioning on the synthetic held-out split: how much QA utility choosing the best of n sampled
captions adds over one sample.

    .venv/bin/python benchmarks/best_of_n.py --demo DIR [--n 4] [--temperature 1.0] [--seed 0]

DIR is a finished ``caprl demo --out DIR`` (any seed): its warm-started captioner (``train/sft``, SFT only, no RL)
captions the held-out test split it curated (``curate/test/dataset``) through ``caprl annotate`` with ``select:``,
``n`` samples per image scored by QA accuracy on the image's own questions (every question once, the lexical
answerer, as the demo's held-out evaluation). Printed (and as JSON): the mean over images of the chosen caption's QA
accuracy (best of n), of the n candidates' mean (what one sample gets on average), and of the first sample, the
margin, and the wall time. Run in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, type=Path, help="a finished caprl demo output folder")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import polars as pl

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run

    test = args.demo / "curate" / "test" / "dataset" / "train.parquet"
    policy = args.demo / "train" / "sft"
    for need in (test, policy / "config.json"):
        if not need.exists():
            raise SystemExit(f"{need} is missing: run `caprl demo --out {args.demo}` first")
    with tempfile.TemporaryDirectory(prefix="caprl-bench-best-of-n-") as tmp:
        out = Path(tmp) / "out"
        cfg = AnnotateConfig.model_validate(
            {
                "input": {"path": str(test), "path_column": "images", "carry_columns": ["reward_model"]},
                "backend": {
                    "name": "transformers",
                    "model": str(policy),
                    "batch_size": 32,
                    "sampling": {"n": args.n, "temperature": args.temperature, "max_tokens": 16, "seed": args.seed},
                },
                "select": {"reward": {"components": [{"name": "qa_accuracy"}],
                                      "qa": {"mode": "all_qa", "answerer": {"name": "lexical"}}}},
                "sharding": {"shard_size": 100},
                "output_dir": str(out),
            }
        )
        t0 = time.perf_counter()
        report = run(cfg)
        wall = time.perf_counter() - t0
        rows = [r for r in pl.read_parquet(str(out / "*.parquet")).to_dicts() if r["quality"] is not None]
    first = sum(r["quality"]["scores"][0] for r in rows) / len(rows)
    result = {
        "images": len(rows),
        "n": args.n,
        "temperature": args.temperature,
        "best_of_n": report.metrics["select_chosen_mean"],
        "mean_of_candidates": report.metrics["select_candidates_mean"],
        "first_sample": first,
        "margin": report.metrics["select_chosen_mean"] - report.metrics["select_candidates_mean"],
        "wall_s": round(wall, 1),
    }
    print(
        f"{len(rows)} test images, best of {args.n} (temperature {args.temperature}): QA accuracy "
        f"{result['best_of_n']:.3f} vs {result['mean_of_candidates']:.3f} for the mean of the candidates "
        f"(first sample {first:.3f}), margin {result['margin']:+.3f}, {wall:.1f} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
