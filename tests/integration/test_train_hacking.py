"""The reward-hacking audit of a TRL run on the tiny captioner: every validation logs val/utility@256, the caption
length and (trl.val_faithfulness) the claim precision against the val rows' reference captions, and the alarm's
verdict; the validation audit on crafted captions whose facts sit past 256 tokens raises the alarm after a rising
reward, and does not when they come first; a resumed run whose history holds a rising reward over a falling
utility raises it in metrics.jsonl, the run report and the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.rewards.base import decode_ground_truth
from caprl_kit.rewards.qa import qa_scorer
from caprl_kit.synthetic import write_scenes
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run
from caprl_kit.train.val_audit import ValidationAudit
from curated_sets import curate_import, scene_rows

FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed eiusmod".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """8 curated scenes (6 train, 2 val); the val rows carry their scene's reference caption."""
    root = tmp_path_factory.mktemp("hacking")
    scenes = write_scenes(root / "images", 8, max_shapes=1)
    dataset = curate_import(root, scene_rows(scenes), val_fraction=0.25)
    table = pq.read_table(dataset / "val.parquet")
    by_key = {s.key: s for s in scenes}
    refs = [by_key[Path(images[0]).stem].caption() for images in table.column("images").to_pylist()]
    pq.write_table(table.append_column("reference", pa.array(refs)), root / "val_refs.parquet")
    return {"train": dataset / "train.parquet", "val": root / "val_refs.parquet", "refs": refs}


def config(tiny, data: dict, out: Path, steps: int, **trl) -> TrainConfig:
    return TrainConfig.model_validate({
        "policy": str(tiny["captioner"]),
        "data": {"train_files": [str(data["train"])], "val_files": [str(data["val"])], "max_response_length": 8},
        "reward": {"qa": {"answerer": {"name": "lexical"}, "qa_num": 2},
                   "faithfulness": {"verifier": {"reference_column": "reference"}}},
        "algorithm": {"num_generations": 4, "max_steps": steps, "save_steps": 1, "eval_steps": 1, "lr": 5e-3,
                      "kl_coef": 0.0},
        "trl": {"per_device_batch_size": 4, "report_to": [], "val_faithfulness": True, **trl},
        "output_dir": str(out),
    })


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_validation_logs_utility_at_256_claim_precision_and_the_alarm(tiny_models, data: dict, tmp_path: Path,
                                                                    caplog) -> None:
    out = tmp_path / "run"
    cfg = config(tiny_models, data, out, steps=2, hacking_alarm={"window": 2})
    report = run(cfg)
    val = [m for m in records(out) if "val/qa_accuracy" in m]
    assert [m["step"] for m in val] == [0, 1, 2]
    for m in val:
        # the captions (8 tokens at most) are never cut: utility@256 is the full-length accuracy
        assert m["val/utility@256"] == m["val/qa_accuracy"] and 0 < m["val/caption_tokens"] <= 8
        assert m["val/claim_precision"] is None or 0.0 <= m["val/claim_precision"] <= 1.0
        assert m["monitor/hacking_alarm"] == 0 and "monitor/hacking_reason" not in m
    # the reward logged between validations: none before the first step, step 1's at the validation after step 2
    assert "monitor/hacking_reward" not in val[0] and "monitor/hacking_reward" not in val[1]
    assert val[2]["monitor/hacking_reward"] == next(m["reward"] for m in records(out) if m.get("step") == 1
                                                    and "reward" in m)
    assert not [n for n in report.notes if "hacking" in n]

    # a resumed run over a history whose reward rose while utility@256 stood above anything the policy reaches
    lines = []
    for m in records(out):
        if "reward" in m:
            m["reward"] = {1: 0.0, 2: 1.0}[m["step"]]
        if "val/qa_accuracy" in m and m["step"] in (1, 2):
            m["val/utility@256"] = 2.0
        lines.append(json.dumps(m))
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="caprl_kit"):
        report = run(config(tiny_models, data, out, steps=3, hacking_alarm={"window": 2}))
    last = [m for m in records(out) if "val/qa_accuracy" in m][-1]
    assert last["step"] == 3 and last["monitor/hacking_alarm"] == 1
    assert last["monitor/hacking_reason"].startswith("training reward rose ")
    assert "over steps 2-3 while val utility@256 fell" in last["monitor/hacking_reason"]
    (note,) = [n for n in report.notes if "hacking" in n]
    assert note.startswith("reward-hacking alarm at step(s) 3: ") and last["monitor/hacking_reason"] in note
    assert any("reward-hacking alarm" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_the_audit_on_crafted_captions(tiny_models, data: dict, tmp_path: Path) -> None:
    """Captions whose facts sit behind 300 filler words lose them at 256 tokens: after a rising reward the alarm is
    raised; the same facts said first keep utility@256 and raise none."""
    from transformers import AutoProcessor

    out = tmp_path / "audit"
    out.mkdir()
    cfg = config(tiny_models, data, out, steps=4, hacking_alarm={"window": 3})
    rows = pq.read_table(data["val"]).to_pylist()
    qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in rows]
    scorer = qa_scorer(cfg.reward.qa.model_copy(update={"mode": "all_qa"}))
    audit = ValidationAudit(cfg, AutoProcessor.from_pretrained(tiny_models["captioner"]), rows,
                            [r["images"][0] for r in rows], out / "metrics.jsonl")
    filler = " ".join(FILLER[i % len(FILLER)] for i in range(300))

    def validate(step: int, captions: list[str]) -> dict:
        scores = scorer.score(captions, qas).scores
        record = {"step": step, "val/qa_accuracy": sum(scores) / len(scores)}
        audit.extend(record, captions, qas, scores, scorer)
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n" + json.dumps({"step": step, "reward": 0.2 * step}) + "\n")
        return record

    early, late = list(data["refs"]), [f"{filler}. {ref}" for ref in data["refs"]]
    for step in (0, 1, 2):
        assert validate(step, early)["monitor/hacking_alarm"] == 0
    first = validate(3, early)  # the reward rose 0.0 -> 0.4 over steps 1-3, utility@256 stayed
    assert first["val/utility@256"] == first["val/qa_accuracy"] == 1.0 and first["monitor/hacking_alarm"] == 0
    hacked = validate(4, late)  # full-length accuracy unchanged, the facts past the cut
    assert hacked["val/qa_accuracy"] == 1.0 and hacked["val/utility@256"] == 0.0
    assert hacked["val/caption_tokens"] > 256
    assert hacked["val/claim_precision"] == 0.5  # the filler is a claim the reference does not hold
    assert hacked["monitor/hacking_alarm"] == 1
    assert "val utility@256 fell" in hacked["monitor/hacking_reason"]
    assert "val claim precision fell" in hacked["monitor/hacking_reason"]
    assert audit.alarms() == {4: hacked["monitor/hacking_reason"]}
