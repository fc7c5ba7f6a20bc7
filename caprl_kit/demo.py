"""The offline demo: the CapRL loop on a CPU with tiny models it builds itself (no GPU, no downloads).

Steps (each resumable; rerunning skips what is done):
1. build the tiny random-weight Qwen2.5-VL captioner and Qwen2 answerer;
2. write the synthetic sanity task (coloured shapes with known facts, MCQs, train/val/test split by image);
3. ``caprl curate`` the train and test splits in import mode (the lexical answerer reading the reference caption
   stands in for the visual answerer; text-only it answers nothing), with a corrupt file to show the funnel;
4. ``caprl annotate`` the held-out test images with the captioner;
5. ``caprl eval``: held-out QA utility of the captioner's captions on the curated test set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caprl_kit.commands import NullProgress, Progress
from caprl_kit.log import get_logger

log = get_logger(__name__)


def run_demo(out_dir: str | Path = "demo_output", n_images: int = 24, progress: Progress | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run as annotate
    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.curate.pipeline import run as curate
    from caprl_kit.evaluate.config import EvalConfig
    from caprl_kit.evaluate.pipeline import run as evaluate
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.synthetic import write_sanity_task

    progress = progress or NullProgress()
    out = Path(out_dir)
    summary: dict[str, Any] = {"output_dir": str(out)}

    progress.start("tiny models", total=1)
    models = build_tiny_models(out / "models")
    progress.advance("tiny models")
    summary["models"] = {k: str(v) for k, v in models.items()}

    n_test = max(4, n_images // 3)
    manifests = write_sanity_task(out / "data", n_train=n_images, n_val=max(2, n_images // 6), n_test=n_test)
    with manifests["train"].open("a") as fh:  # one broken item: the funnel must account for it
        fh.write(json.dumps({"path": "images/corrupt.png", "qa": [], "caption": ""}) + "\n")
    (out / "data" / "train" / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    curated = {}
    for split in ("train", "test"):
        cfg = CurateConfig.model_validate({
            "input": {"path": str(manifests[split])}, "import_mode": "qa",
            "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
            "export": {"val_fraction": 0.0}, "sharding": {"shard_size": 16},
            "output_dir": str(out / "curate" / split)})
        report = curate(cfg, overwrite=overwrite, progress=progress)
        funnel = json.loads((out / "curate" / split / "dataset" / "funnel.json").read_text())
        curated[split] = {"items_in": funnel["items_in"], "items_kept": funnel["items_kept"],
                          "dropped": funnel["items_dropped"], "questions_kept": funnel["questions_kept"],
                          "dataset": report.outputs["train.parquet"]}
    summary["curate"] = curated

    acfg = AnnotateConfig(
        input={"path": str(out / "data" / "test" / "images")},
        backend={"name": "transformers", "model": str(models["captioner"]), "batch_size": 8,
                 "sampling": {"n": 1, "temperature": 1.0, "max_tokens": 24, "seed": 0}},
        sharding={"shard_size": 10}, output={"export_jsonl": True}, output_dir=str(out / "annotate"))
    report = annotate(acfg, overwrite=overwrite, progress=progress)
    summary["annotate"] = {"items": report.n_items, "ok": report.n_ok, "failed": report.n_failed,
                           "captions_jsonl": report.outputs.get("captions.jsonl")}

    ecfg = EvalConfig.model_validate({
        "label": "tiny captioner (untrained)",
        "qa_utility": {"dataset": curated["test"]["dataset"], "qa": {"answerer": {"name": "lexical"}, "mode": "all_qa"}},
        "captioner": {"name": "transformers", "model": str(models["captioner"]),
                      "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 24, "seed": 0}},
        "output_dir": str(out / "eval")})
    report = evaluate(ecfg, progress=progress)
    summary["eval"] = {"held_out_qa_accuracy": report.metrics["qa_utility M_Acc"], "report": report.outputs["report"]}
    summary["not_yet"] = ["train: GRPO from an SFT warm start (the CPU learning proof) and the demo's HTML report"]
    return summary
