"""The offline demo: the CapRL loop on a CPU with tiny models it builds itself (no GPU, no downloads).

Steps (each resumable; rerunning skips what is done):
1. build the tiny random-weight Qwen2.5-VL captioner and Qwen2 answerer;
2. write synthetic scenes (coloured shapes with known facts) plus one corrupt file;
3. ``caprl annotate`` the scenes with the captioner (transformers back end) into Parquet shards;
4. answer each scene's MCQs from its reference caption with the lexical answerer (the CapRL reward's shape),
   as a sanity check of the QA machinery.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from caprl_kit.commands import NullProgress, Progress
from caprl_kit.log import get_logger

log = get_logger(__name__)


def run_demo(out_dir: str | Path = "demo_output", n_images: int = 24, progress: Progress | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run as annotate
    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request
    from caprl_kit.backends.config import BackendConfig
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.synthetic import write_scenes

    progress = progress or NullProgress()
    out = Path(out_dir)
    summary: dict[str, Any] = {"output_dir": str(out)}

    progress.start("tiny models", total=1)
    models = build_tiny_models(out / "models")
    progress.advance("tiny models")
    summary["models"] = {k: str(v) for k, v in models.items()}

    images = out / "data" / "images"
    scenes = write_scenes(images, n_images, seed=0)
    (images / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    summary["images"] = n_images + 1

    cfg = AnnotateConfig(
        input={"path": str(images)},
        backend={"name": "transformers", "model": str(models["captioner"]), "batch_size": 8,
                 "sampling": {"n": 1, "temperature": 1.0, "max_tokens": 24, "seed": 0}},
        sharding={"shard_size": 10},
        output={"export_jsonl": True},
        output_dir=str(out / "annotate"),
    )
    report = annotate(cfg, overwrite=overwrite, progress=progress)
    summary["annotate"] = {"items": report.n_items, "ok": report.n_ok, "failed": report.n_failed,
                           "status_counts": report.status_counts, "shards": report.outputs["shards"],
                           "captions_jsonl": report.outputs.get("captions.jsonl")}

    lexical = build_backend(BackendConfig(name="lexical"))
    rng = random.Random(0)
    requests, answers = [], []
    for scene in scenes:
        for q in scene.mcqs(rng):
            options = "\n".join(f"   - {c}" for c in q["choices"]) + "\n   - E) Can not answer based on the caption"
            for caption in (scene.caption(), ""):
                requests.append(Request.user(f"Caption: <Caption Start> {caption} <Caption End>\n"
                                             f"Question: {q['question']}\n{options}", prefill="The answer is"))
                answers.append(q["answer"])
    progress.start("lexical QA check", total=len(requests))
    outs = lexical.generate(requests)
    progress.advance("lexical QA check", items=len(requests))
    full = [o.texts[0].strip().startswith(a) for o, a in zip(outs[0::2], answers[0::2])]
    blind = [o.texts[0].strip().startswith(a) for o, a in zip(outs[1::2], answers[1::2])]
    summary["qa_check"] = {"questions": len(full), "accuracy_full_caption": sum(full) / len(full),
                           "accuracy_empty_caption": sum(blind) / len(blind)}
    summary["not_yet"] = ["curate", "train", "eval (and the HTML report) arrive with their issues"]
    return summary
