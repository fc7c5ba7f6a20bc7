"""The demo's one-page HTML report: the learning proof (A1 vs A0 vs the blind ceiling), training curves, the curate
funnel, the eval table and sample captions with their images. Self-contained (inline SVG, base64 thumbnails)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from caprl_kit.io.rows import read_rows
from caprl_kit.monitors import FLAGS


def _thumb(path: str) -> str:
    try:
        return base64.b64encode(Path(path).read_bytes()).decode()
    except OSError:
        return ""


def _samples(out: Path, n: int = 8) -> list[dict[str, Any]]:
    """The same held-out images captioned by both models (SFT-only vs RL) with their QA scores."""
    import pyarrow.parquet as pq

    runs = {}
    for name in ("sft", "rl"):
        files = sorted((out / "eval" / name).glob("samples_qa_utility_*.jsonl"))
        runs[name] = {r["sample_id"]: r for r in read_rows(str(files[-1]))} if files else {}
    test = out / "curate" / "test" / "dataset" / "train.parquet"
    if not test.is_file() or not runs["rl"]:
        return []
    rows = pq.read_table(test, columns=["id", "images"]).to_pylist()[:n]
    return [
        {"thumb": _thumb(r["images"][0]), "sft": runs["sft"].get(r["id"], {}), "rl": runs["rl"].get(r["id"], {})}
        for r in rows
    ]


def write_report(out: Path, summary: dict[str, Any], curated: dict[str, dict[str, Any]]) -> Path:
    """report.html from reports/templates/demo.html.j2 (atomically)."""
    from caprl_kit.reports import render

    ev = summary["eval"]
    train_dir = out / "train"
    metrics = read_rows(str(train_dir / "metrics.jsonl"), missing_ok=True)
    wins = ev["A1_rl"] > ev["A0_sft"] and ev["A1_rl"] > ev["blind_ceiling"]
    trainers = summary.get("trainers")
    proof = [("SFT + GRPO, checkpoint chosen on validation (A1)", ev["A1_rl"])]
    rows = [("SFT + GRPO (best on validation)", ev["A1_rl"], ev.get("monitors", {}).get("A1_rl", {}))]
    if "A2_faithful" in ev:
        proof.append(("SFT + GRPO on QA + faithfulness, per term (A2)", ev["A2_faithful"]))
        rows.append(("SFT + GRPO on QA + faithfulness", ev["A2_faithful"], ev["monitors"].get("A2_faithful", {})))
    if trainers:
        for key, label in (("grpo_http", "SFT + GRPO, reward over HTTP"), ("dpo", "SFT + DPO on reward-ranked pairs")):
            proof.append((label, trainers[key]["accuracy"]))
            rows.append((label, trainers[key]["accuracy"], trainers[key].get("monitors", {})))
    proof += [
        ("SFT warm start only (A0)", ev["A0_sft"]),
        ("image-blind ceiling (best single fixed caption)", ev["blind_ceiling"]),
    ]
    rows.append(("SFT warm start only", ev["A0_sft"], ev.get("monitors", {}).get("A0_sft", {})))
    page = render(
        "demo.html.j2",
        ev=ev,
        best=summary["train"],
        curated=curated,
        flags=FLAGS,
        samples=_samples(out),
        verdict="RL beats SFT-only and the blind ceiling" if wins else "RL did NOT beat both baselines in this run",
        proof=proof,
        eval_rows=rows,
        faithful=[
            (label, ev[key], ev["claim_precision"][key], ev["hallucinated_claim_rate"][key])
            for key, label in (
                ("A0_sft", "SFT warm start only"),
                ("A1_rl", "SFT + GRPO on QA accuracy"),
                ("A2_faithful", "SFT + GRPO on QA + faithfulness, per term"),
            )
        ]
        if "A2_faithful" in ev
        else [],
        trainers=trainers,
        sft=[(m["step"], m["loss"]) for m in read_rows(str(train_dir / "sft_metrics.jsonl"), missing_ok=True)],
        reward=[(m["step"], m["reward"]) for m in metrics if "reward" in m],
        val=[(m["step"], m["val/qa_accuracy"]) for m in metrics if "val/qa_accuracy" in m],
        funnel_keys=[
            "items_in",
            "items_kept",
            "questions_parsed",
            "questions_pass_visual",
            "questions_pass_text",
            "questions_kept",
        ],
    )
    path = out / "report.html"
    tmp = path.with_suffix(".html.partial")
    tmp.write_text(page)
    tmp.replace(path)
    return path
