"""trainer: trl with reward.components [qa_accuracy, faithfulness 0.5]: real GRPO steps on the tiny captioner, the
faithfulness term reading each training row's reference caption (a column TRL hands the reward), logged per term;
both reward normalisations (summed, and per term as GDPO)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.synthetic import write_scenes
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run
from curated_sets import curate_import, scene_rows


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    """Curated rows of 8 scenes with each scene's reference caption in a ``reference`` column."""
    root = tmp_path_factory.mktemp("faith_train")
    scenes = write_scenes(root / "images", 8)
    table = pq.read_table(curate_import(root, scene_rows(scenes)) / "train.parquet")
    by_key = {s.key: s for s in scenes}
    refs = [by_key[Path(images[0]).stem].caption() for images in table.column("images").to_pylist()]
    out = root / "train_refs.parquet"
    pq.write_table(table.append_column("reference", pa.array(refs)), out)
    return out


@pytest.mark.parametrize("normalization", ["sum", "per_term"])
def test_grpo_trains_on_qa_and_faithfulness(tiny_models, train_file: Path, tmp_path: Path, normalization: str) -> None:
    out = tmp_path / normalization
    cfg = TrainConfig.model_validate({
        "policy": str(tiny_models["captioner"]),
        "data": {"train_files": [str(train_file)], "max_response_length": 8},
        "reward": {"qa": {"answerer": {"name": "lexical"}, "qa_num": 2},
                   "components": [{"name": "qa_accuracy"}, {"name": "faithfulness", "weight": 0.5}],
                   "faithfulness": {"verifier": {"reference_column": "reference"}}},
        "algorithm": {"num_generations": 4, "max_steps": 2, "save_steps": 2, "lr": 5e-3, "kl_coef": 0.0,
                      "reward_normalization": normalization},
        "trl": {"per_device_batch_size": 4, "report_to": []},
        "output_dir": str(out),
    })
    report = run(cfg)
    assert report.metrics["steps"] == 2.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    faith = [m["reward_detail/faithfulness_reward"] for m in metrics if "reward_detail/faithfulness_reward" in m]
    assert faith and all(0.0 <= v <= 1.0 for v in faith)
    logged = set().union(*metrics)
    if normalization == "per_term":
        assert {"rewards/qa_accuracy/mean", "rewards/faithfulness/mean"} <= logged
    else:
        assert "rewards/caprl_reward/mean" in logged
