"""caprl curate: engine calls per 100 images and items/s per stage, batched vs per-item, in one run.

    .venv/bin/python benchmarks/curate.py [--images 40]

Tiny Qwen2.5-VL (transformers back end) as generator and as answerer, synthetic scenes:
- generate stage (MCQ generation from the image): backend.batch_size 16 vs 1;
- answer stage (import mode with the scenes' QAs; 4 rotations with the image + 4 text-only per question):
  backend.batch_size 32 vs 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _span(stats) -> float:
    """Wall seconds from the first shard's start to the last shard's end (second resolution in the sidecars)."""
    from datetime import datetime

    start = min(datetime.fromisoformat(s.started_at) for s in stats)
    end = max(datetime.fromisoformat(s.finished_at) for s in stats)
    return max((end - start).total_seconds(), 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    args = ap.parse_args()

    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.curate.pipeline import run
    from caprl_kit.io.rundir import RunDir
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.schemas import MCQGenerationRow, QATrialsRow
    from caprl_kit.synthetic import write_scenes

    root = Path(tempfile.mkdtemp(prefix="caprl-bench-curate-"))
    vlm = str(build_tiny_models(root / "models")["captioner"])
    scenes = write_scenes(root / "images", args.images)
    rng = random.Random(0)
    manifest = root / "qa.jsonl"
    manifest.write_text("\n".join(json.dumps({"path": f"images/{s.key}.png", "qa": s.mcqs(rng)}) for s in scenes))
    n_questions = sum(len(json.loads(line)["qa"]) for line in manifest.read_text().splitlines())

    def backend(batch: int, max_tokens: int) -> dict:
        return {"name": "transformers", "model": vlm, "batch_size": batch,
                "sampling": {"temperature": 0.1, "max_tokens": max_tokens, "repetition_penalty": 1.05}}

    results = {}
    for mode, batch in (("batched", 16), ("per-item", 1)):
        cfg = CurateConfig.model_validate({
            "input": {"path": str(root / "images")}, "generate": {"backend": backend(batch, 32)},
            "answer": {"backend": backend(batch, 4)}, "sharding": {"shard_size": 20},
            "output_dir": str(root / f"gen-{mode}")})
        t0 = time.perf_counter()
        run(cfg)
        secs = time.perf_counter() - t0
        stats = RunDir(str(root / f"gen-{mode}" / "generate"), MCQGenerationRow).read_stats()
        calls = sum(s.metrics.get("requests", 0) for s in stats)
        stage_s = _span(stats)  # shards overlap on the streaming engine: the stage's wall span
        results[f"generate/{mode}"] = {"images_per_s": args.images / stage_s, "requests_per_100_images":
                                       100 * calls / args.images, "run_s": secs}
    for mode, batch in (("batched", 32), ("per-item", 1)):
        cfg = CurateConfig.model_validate({
            "input": {"path": str(manifest)}, "import_mode": "qa", "answer": {"backend": backend(batch, 4)},
            "sharding": {"shard_size": 20}, "output_dir": str(root / f"ans-{mode}")})
        t0 = time.perf_counter()
        run(cfg)
        secs = time.perf_counter() - t0
        stats = RunDir(str(root / f"ans-{mode}" / "answer"), QATrialsRow).read_stats()
        calls = sum(s.metrics.get("requests", 0) for s in stats)
        answer_s = _span(stats)
        results[f"answer/{mode}"] = {"questions_per_s": n_questions / answer_s, "images_per_s": args.images / answer_s,
                                     "requests_per_100_images": 100 * calls / args.images, "run_s": secs}
    print(f"{args.images} images, {n_questions} questions (x4 rotations x2 conditions in the answer stage)")
    for name, r in results.items():
        rate = f"{r['images_per_s']:7.2f} images/s"
        if "questions_per_s" in r:
            rate += f" ({r['questions_per_s']:.1f} questions/s)"
        print(f"{name:<18} {rate}   requests per 100 images: {r['requests_per_100_images']:7.1f}")
    for stage in ("generate", "answer"):
        print(f"{stage}: batched / per-item = "
              f"{results[f'{stage}/batched']['images_per_s'] / results[f'{stage}/per-item']['images_per_s']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
