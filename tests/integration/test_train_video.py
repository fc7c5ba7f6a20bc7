"""caprl train with trainer: trl on video rows: the policy sees each video's sampled frames as timestamped images
(TRL's GRPOTrainer passes image inputs only), the CapRL++ reward (QA + timestamp format + length) is logged term by
term; curated rows as caprl curate exports them and CapRL-Video-QA-20K rows as published."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.demo import curate_split
from caprl_kit.progress import NullProgress
from caprl_kit.synthetic_video import write_video_task
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run

runner = CliRunner()
MEDIA = {"video_fps": 1.0, "video_min_frames": 2, "video_max_frames": 4, "video_max_pixels": 3136}


@pytest.fixture(scope="module")
def video_task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video_task")
    manifests = write_video_task(root / "data", n_train=4, n_val=2, n_test=0, seed=0, size=56)
    out = {f"{split}_manifest": manifests[split] for split in ("train", "val")}
    for split in ("train", "val"):
        curated = curate_split(manifests[split], root / "curate" / split, overwrite=False, progress=NullProgress())
        out[split] = Path(curated["dataset"])
    return out


def video_cfg(tiny, train: str, out: Path, **extra) -> TrainConfig:
    data = {
        "trainer": "trl",
        "task": "video",
        "policy": str(tiny["captioner"]),
        "data": {"train_files": [train], "max_response_length": 8},
        "media": MEDIA,
        "reward": {
            "components": [
                {"name": "qa_accuracy", "weight": 1.0},
                {"name": "timestamp_format", "weight": 0.2},
                {"name": "length", "weight": 0.2},
            ],
            "qa": {"task": "video", "answerer": {"name": "lexical"}, "qa_num": 2},
            "length": {"l1": 4, "l2": 8},  # so that the term varies over 8-token captions
        },
        "algorithm": {"num_generations": 4, "max_steps": 2, "save_steps": 2, "eval_steps": 2, "lr": 5e-3,
                      "kl_coef": 0.0},
        "trl": {"per_device_batch_size": 4, "report_to": [], "max_pixels": 3136},
        "output_dir": str(out),
    }
    for key, value in extra.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    return TrainConfig.model_validate(data)


@pytest.mark.slow
def test_curated_video_rows_warm_start_train_and_log_each_term(tiny_models, video_task, tmp_path: Path) -> None:
    from caprl_kit.train.trl_grpo import training_rows

    out = tmp_path / "run"
    cfg = video_cfg(
        tiny_models,
        str(video_task["train"]),
        out,
        data={"val_files": [str(video_task["val"])]},
        sft={"data_files": [str(video_task["train_manifest"])], "video_column": "path",
             "caption_column": "caption_incomplete", "max_steps": 2, "batch_size": 2, "prompt": "caprl_video_timestamped"},
    )
    row = training_rows(cfg)[0]  # what TRL reads: the frames as images, each after its timestamp
    user = row["prompt"][0]["content"]
    assert [p.get("text") for p in user[:8]] == ["<0.5 seconds>", None, "<1.5 seconds>", None, "<2.5 seconds>", None,
                                                 "<3.5 seconds>", None]
    assert user[1] == {"type": "image"} and user[-1]["text"].startswith("You are a video captioner")
    assert len(row["images"]) == 4 and row["images"][0].size == (56, 56)
    assert len(row["reward_model"]["ground_truth"]) == 5

    report = run(cfg)
    assert report.metrics["steps"] == 2.0 and (out / "sft" / "config.json").is_file()
    assert (out / "best" / "config.json").is_file() and (out / "final" / "config.json").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:  # every term of the CapRL++ video reward, logged on its own
        assert 0.0 <= m["reward_detail/qa_reward"] <= 1.0 and 0.0 <= m["reward_detail/format_reward"] <= 1.0
        assert 0.0 <= m["reward_detail/length_reward"] <= 1.0 and m["reward_detail/cap_tokens"] > 0
    assert [m["step"] for m in metrics if "val/qa_accuracy" in m] == [0, 2]  # selection on the validation videos
    assert json.loads((out / "sft_metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


OFFICIAL_PROMPT = "<video>\nYou are a video captioner. Describe this video in strictly chronological order."


def official_rows(video_task, root: Path) -> Path:
    """CapRL-Video-QA-20K as published: JSONL, the prompt as a one-message list, ``videos`` relative to the
    LLaVA-Video-178K root, choices "A. text"."""
    media = root / "LLaVA-Video-178K"
    rows = []
    for i, line in enumerate(video_task["train_manifest"].read_text().splitlines()):
        src = json.loads(line)
        rel = f"0_30_s_youtube_v0_1/videos/ytb_{i}.mp4"
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video_task["train_manifest"].parent / src["path"], media / rel)
        gt = [{**q, "choices": [c.replace(")", ".", 1) for c in q["choices"]]} for q in src["qa"]]
        rows.append({"prompt": [{"role": "user", "content": OFFICIAL_PROMPT}], "videos": [rel],
                     "data_source": "video_caption_rl", "reward_model": {"ground_truth": gt}})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_official_video_qa_20k_rows_train_per_term_and_dry_run(tiny_models, video_task, tmp_path: Path) -> None:
    data = official_rows(video_task, tmp_path)
    out = tmp_path / "run"
    media_root = str(tmp_path / "LLaVA-Video-178K")
    cfg = video_cfg(tiny_models, str(data), out, data={"media_root": media_root},
                    algorithm={"max_steps": 1, "save_steps": 1, "reward_normalization": "per_term"})
    conf = tmp_path / "train.yaml"
    conf.write_text(json.dumps(cfg.model_dump(mode="json", exclude={"output_dir"})))
    dry = runner.invoke(app, ["train", "-c", str(conf), "--dry-run", "--output", str(out)])
    assert dry.exit_code == 0, dry.output
    assert "trl: loaded 4 training rows; the first prompt renders to" in " ".join(dry.output.split())

    run(cfg)
    step = next(json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x)
    for term in ("qa_accuracy", "timestamp_format", "length"):  # GDPO: each term normalised and logged apart
        assert f"rewards/{term}/mean" in step and f"rewards/{term}/std" in step
