"""caprl train on CPU: real GRPO steps with TRL on the tiny captioner (weights change, checkpoint, resume, HF
export that the transformers back end captions with), the SFT warm start, and verl dry runs validated by verl's
own code for image and video data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.errors import CaprlError
from caprl_kit.synthetic import write_scenes
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run
from curated_sets import curate_import, scene_rows
from media_factory import make_video_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curated")
    scenes = write_scenes(root / "images", 8)
    curate_import(root, scene_rows(scenes), out="out", val_fraction=0.25)
    (root / "sft.jsonl").write_text("\n".join(json.dumps({"image": str(root / "images" / f"{s.key}.png"),
                                                           "caption": s.caption()}) for s in scenes))
    (root / "chars.py").write_text("def distinct_chars(completions, **kw):\n"
                                   "    return [len(set(c[-1]['content'] if isinstance(c, list) else c)) / 10 "
                                   "for c in completions]\n")
    return root


@pytest.fixture(scope="module")
def curated_video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curated_video")
    (root / "videos").mkdir()
    for i in range(3):
        (root / "videos" / f"v{i}.mp4").write_bytes(make_video_bytes(n_frames=12, fps=6))
    qa = [{"question": "What moves?", "choices": ["A. a bar", "B. a ball"], "answer": "A"}]
    rows = [{"path": f"videos/v{i}.mp4", "qa": qa, "caption": "a bar moves"} for i in range(3)]
    return curate_import(root, rows) / "train.parquet"


def trl_cfg(tiny, curated: Path, out: Path, steps: int, **extra) -> TrainConfig:
    data = {
        "policy": str(tiny["captioner"]),
        "data": {"train_files": [str(curated / "out" / "dataset" / "train.parquet")], "max_response_length": 8},
        "reward": {"qa": {"answerer": {"name": "lexical"}, "qa_num": 2},
                   # a user term from a file, so the random tiny policy's captions get different rewards
                   "components": [{"name": "qa_accuracy"}, {"name": f"file:{curated / 'chars.py'}:distinct_chars"}]},
        "algorithm": {"num_generations": 4, "max_steps": steps, "save_steps": 1, "lr": 5e-3, "kl_coef": 0.0},
        "trl": {"per_device_batch_size": 4, "report_to": []},
        "output_dir": str(out),
    }
    data.update(extra)
    return TrainConfig.model_validate(data)


def test_two_grpo_steps_checkpoint_resume_and_export(tiny_models, curated: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request
    from caprl_kit.backends.config import BackendConfig

    out = tmp_path / "trl"
    report = run(trl_cfg(tiny_models, curated, out, steps=2))
    assert report.metrics["steps"] == 2.0
    assert (out / "checkpoint-2").is_dir() and (out / "final" / "config.json").is_file()
    before = load_file(str(Path(tiny_models["captioner"]) / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, "two GRPO steps with non-zero advantages must change the weights"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward_detail/qa_reward" in m for m in metrics) and any("rewards/caprl_reward/mean" in m for m in metrics)
    # per-question shares: answered correctly, and the cannot-answer option taken (shuffle mode offers it)
    shares = [m for m in metrics if "reward_detail/question_accuracy" in m and "reward_detail/cannot_answer_rate" in m]
    assert shares and all(0.0 <= m["reward_detail/cannot_answer_rate"] <= 1.0 for m in shares)
    logged = [m for m in metrics if "monitor/repetitive" in m]  # caption hygiene of the policy's completions
    assert logged and all(0.0 <= m[f"monitor/{f}"] <= 1.0 for m in logged
                          for f in ("repetitive", "boilerplate_opener", "meta_ending", "empty"))
    # resume: a longer run continues from checkpoint-2 instead of starting over
    resumed = run(trl_cfg(tiny_models, curated, out, steps=3))
    assert resumed.metrics["steps"] == 3.0 and any("resumed" in n for n in resumed.notes)
    # the export is a plain HF directory: the transformers back end loads it and captions
    backend = build_backend(BackendConfig(name="transformers", model=str(out / "final"), sampling={"max_tokens": 6}))
    (resp,) = backend.generate([Request.user("Please describe this image in detail.",
                                             images=[curated / "images" / "scene_00000.png"])])
    assert resp.ok and resp.texts[0] is not None


def test_grpo_with_per_term_normalisation_trains_and_logs_each_term(tiny_models, curated: Path,
                                                                   tmp_path: Path) -> None:
    """algorithm.reward_normalization: per_term (GDPO) through TRL's own normalize_then_sum: one reward function per
    term, each logged on its own, and the policy moves."""
    from safetensors.torch import load_file

    out = tmp_path / "gdpo"
    cfg = trl_cfg(tiny_models, curated, out, steps=2)
    cfg = cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"reward_normalization": "per_term"})})
    report = run(cfg)
    assert report.metrics["steps"] == 2.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*metrics)
    assert "rewards/qa_accuracy/mean" in logged and any(k.endswith(":distinct_chars/mean") for k in logged)
    assert "rewards/caprl_reward/mean" not in logged  # no summed function beside the terms
    assert any("reward_detail/qa_reward" in m for m in metrics)  # the per-term details still reach the log
    before = load_file(str(Path(tiny_models["captioner"]) / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


def test_sft_warm_start_then_grpo_with_validation_selection(tiny_models, curated: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    sft_rows = (curated / "sft.jsonl").read_text().splitlines()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)  # an unreadable image is skipped, not a crashed job
    (tmp_path / "sft.jsonl").write_text("\n".join(sft_rows + [json.dumps({"image": str(bad), "caption": "x"})]))
    out = tmp_path / "sft-rl"
    cfg = trl_cfg(tiny_models, curated, out, steps=2,
                  sft={"data_files": [str(tmp_path / "sft.jsonl")], "max_steps": 3, "batch_size": 4, "lr": 1e-3,
                       "freeze_vision_tower": True, "log_steps": 1})
    cfg.data.val_files = [str(curated / "out" / "dataset" / "val.parquet")]
    cfg.algorithm.eval_steps = 1
    report = run(cfg)
    before = load_file(str(Path(tiny_models["captioner"]) / "model.safetensors"))
    sft = load_file(str(out / "sft" / "model.safetensors"))
    vision = [k for k in before if "visual" in k]
    assert vision and all(torch.equal(before[k], sft[k]) for k in vision), "SFT froze the vision tower"
    assert any(not torch.equal(before[k], sft[k]) for k in before if "visual" not in k and k in sft)
    assert [json.loads(x)["step"] for x in (out / "sft_metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (out / "final" / "config.json").is_file()
    # checkpoint selection on the validation split: measured before step 1 and after each step, best kept
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val = [m for m in metrics if "val/qa_accuracy" in m]
    assert [m["step"] for m in val] == [0, 1, 2]
    best = json.loads((out / "best.json").read_text())
    assert best["val_qa_accuracy"] == max(m["val/qa_accuracy"] for m in val)
    assert best["step"] == next(m["step"] for m in val if m["val/qa_accuracy"] == best["val_qa_accuracy"])
    assert (out / "best" / "config.json").is_file() and (out / "best" / "processor_config.json").is_file()
    assert report.outputs["best"] == str(out / "best") and report.metrics["best_step"] == best["step"]
    # --overwrite discards the previous run (warm start, checkpoints, best) instead of mixing with it
    (out / "sft" / "stale").write_text("x")
    run(cfg, overwrite=True)
    assert not (out / "sft" / "stale").exists()
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val/qa_accuracy" in x]
    assert [m["step"] for m in val] == [0, 1, 2]


def test_curriculum_stage_two_starts_from_stage_one(tiny_models, curated: Path, tmp_path: Path) -> None:
    out = tmp_path / "curriculum"
    cfg = trl_cfg(tiny_models, curated, out, steps=1,
                  stages=[{"name": "first"}, {"name": "second", "algorithm": {"max_steps": 1, "lr": 1e-3}}])
    report = run(cfg)
    assert report.outputs["first/policy"] == str(tiny_models["captioner"])
    assert report.outputs["second/policy"] == str(out / "first" / "final")  # S2D-Boot: from the previous export
    assert report.outputs["model"] == str(out / "second" / "final")
    assert report.metrics["first/steps"] == report.metrics["second/steps"] == 1.0
    with pytest.raises(Exception, match="stages.1.algorithm.lrr"):
        trl_cfg(tiny_models, curated, out, steps=1, stages=[{"name": "a"}, {"algorithm": {"lrr": 1}}]).stage_configs()


def verl_cfg(policy: str, train: Path, val: Path, **extra) -> dict:
    return {"kind": "train", "trainer": "verl", "policy": policy,
            "data": {"train_files": [str(train)], "val_files": [str(val)], "train_batch_size": 8,
                     "max_prompt_length": 1024, "max_response_length": 64},
            "algorithm": {"num_generations": 4, "mini_batch_size": 4},
            "verl": {"n_gpus_per_node": 8, "reward_urls": ["http://127.0.0.1:18889", "http://127.0.0.1:18890"]},
            **extra}


@pytest.mark.slow
def test_verl_dry_run_image_with_dataset_check(tiny_models, curated: Path, tmp_path: Path) -> None:
    conf = tmp_path / "verl.yaml"
    data = curated / "out" / "dataset"
    conf.write_text(json.dumps(verl_cfg(str(tiny_models["captioner"]), data / "train.parquet", data / "val.parquet")))
    result = runner.invoke(app, ["train", "-c", str(conf), "--dry-run", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "validate_config passed" in result.output
    assert "create_rl_dataset loaded all" in result.output
    assert "python3 -m verl.trainer.main_ppo" in result.output and "reward_urls=" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_verl_dry_run_video_composes_and_validates(curated_video: Path, tmp_path: Path) -> None:
    train = curated_video
    import polars as pl

    row = pl.read_parquet(train).row(0, named=True)
    assert row["videos"][0].endswith(".mp4") and row["prompt"][0]["content"].startswith("<video>")
    conf = tmp_path / "video.yaml"
    conf.write_text(json.dumps(verl_cfg("Qwen/Qwen3-VL-4B-Instruct", train, train, task="video")))
    result = runner.invoke(app, ["train", "-c", str(conf), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "validate_config passed" in result.output and "SKIPPED the dataset check" in result.output
    assert "data.video_key=videos" in result.output and "data.image_patch_size=16" in result.output


@pytest.mark.slow
def test_verl_wrong_key_is_reported_before_launch(curated: Path, tmp_path: Path) -> None:
    data = curated / "out" / "dataset"
    cfg = verl_cfg("Qwen/Qwen2.5-VL-3B-Instruct", data / "train.parquet", data / "val.parquet")
    cfg["verl"]["extra_overrides"] = ["actor_rollout_ref.actor.no_such_knob=3"]
    conf = tmp_path / "bad.yaml"
    conf.write_text(json.dumps(cfg))
    for argv in (["--dry-run"], ["-o", str(tmp_path / "o")]):  # refused in a dry run and before a real launch
        result = runner.invoke(app, ["train", "-c", str(conf), *argv])
        assert result.exit_code == 2, result.output
        assert "verl.extra_overrides" in result.output and "no_such_knob" in " ".join(result.output.split())
    assert not (tmp_path / "o" / "verl.log").exists()


def test_trl_takes_video_with_its_keys_refused_elsewhere_and_verl_needs_val_files() -> None:
    """trainer: trl trains on video rows (tests/integration/test_train_video.py); the keys only that path reads are
    refused where nothing reads them, each naming the key."""
    from caprl_kit.errors import ConfigError
    from caprl_kit.config import validate

    terms = [{"name": "qa_accuracy"}, {"name": "timestamp_format", "weight": 0.2}, {"name": "length", "weight": 0.2}]
    video = {"policy": "x", "task": "video", "data": {"train_files": ["a"]},
             "reward": {"components": terms, "qa": {"task": "video"}},
             "media": {"video_fps": 1.0, "video_max_frames": 8}, "sft": {"data_files": ["s"], "video_column": "path"}}
    cfg = validate(TrainConfig, video)
    assert cfg.trainer == "trl" and cfg.media.video_max_frames == 8
    cases = [  # (changes to the video config, the refused key)
        ({"reward": {"qa": {"task": "image"}}}, "reward.qa.task"),
        ({"task": "image", "reward": {"qa": {"task": "image"}}}, "media.video_fps"),
        ({"sft": {"data_files": ["s"], "image_column": "path"}}, "sft.image_column"),
        ({"trainer": "verl", "reward": {}, "sft": None, "data": {"train_files": ["a"], "val_files": ["a"]}},
         "media.video_fps"),
        ({"media": {"video_min_frames": 8, "video_max_frames": 4}}, "media.video_min_frames"),
    ]
    for change, key in cases:
        with pytest.raises(ConfigError) as err:
            validate(TrainConfig, {k: v for k, v in {**video, **change}.items() if v is not None})
        assert key in {i.path for i in err.value.issues}, (change, err.value)
    with pytest.raises(ConfigError, match="val_files"):
        validate(TrainConfig, {"policy": "x", "trainer": "verl", "data": {"train_files": ["a"]}})


NINE_CHOICES = {"question": "Which shade is it?", "choices": [f"shade {i}" for i in range(9)], "answer": "shade 0"}


@pytest.mark.parametrize("bad, reason", [
    (NINE_CHOICES, "ground_truth[1]: 9 choices, at most 8"),  # used to die mid-run: IndexError in the reward
    ({"question": "What color?", "choices": ["A) red", "B) blue"], "answer": "E"},
     "ground_truth[1]: answer 'E' is not one of the labels A, B"),
], ids=["nine_choices", "answer_not_a_label"])
def test_an_invalid_mcq_in_the_training_data_is_refused_before_training(tiny_models, curated: Path, tmp_path: Path,
                                                                         bad: dict, reason: str) -> None:
    """Every invalid MCQ, a 9-choice one (no label left for the reward's cannot-answer option) among them, is
    refused by the trainer's data check naming the file, row and question, before a model is loaded; the dry run
    refuses it the same way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(curated / "out" / "dataset" / "train.parquet").to_pylist()
    gt = rows[2]["reward_model"]["ground_truth"]
    rows[2]["reward_model"] = {**rows[2]["reward_model"], "ground_truth": gt[:1] + [bad] + gt[1:]}
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    cfg = trl_cfg(tiny_models, curated, tmp_path / "out", steps=1,
                  data={"train_files": [str(data)], "max_response_length": 8})
    with pytest.raises(CaprlError) as err:
        run(cfg)
    assert str(err.value).startswith(f"data.train_files.0: {data} row 2: {reason}")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()  # refused before the trainer started
    conf = tmp_path / "train.yaml"
    conf.write_text(json.dumps(cfg.model_dump(mode="json", exclude={"output_dir"})))
    dry = runner.invoke(app, ["train", "-c", str(conf), "--dry-run"])
    assert dry.exit_code == 2 and f"{data} row 2: {reason}" in " ".join(dry.output.split()), dry.output


def pairs_file(curated: Path) -> Path:
    """A small pairs file in the preference_pair schema, over the curated images."""
    from caprl_kit.io.parquet import write_shard
    from caprl_kit.schemas.pairs import PreferencePairRow

    path = curated / "pairs.parquet"
    if not path.is_file():
        images = sorted((curated / "images").glob("*.png"))[:3]
        write_shard(str(path), [{"id": p.stem, "images": [str(p)], "prompt": [{"role": "user", "content": "Describe."}],
                                 "chosen": [{"role": "assistant", "content": "a red circle at the left"}],
                                 "rejected": [{"role": "assistant", "content": "a shape"}], "chosen_score": 1.0,
                                 "rejected_score": 0.0, "margin": 1.0} for p in images], PreferencePairRow)
    return path


TRAIN_RECIPES = [n for n in __import__("caprl_kit.config", fromlist=["x"]).builtin_pipelines() if n.startswith("train/")]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAIN_RECIPES)
def test_train_recipe_dry_run_with_tiny_policy_checks_the_data(name: str, tiny_models, curated: Path,
                                                               curated_video: Path) -> None:
    """Every train recipe, with the policy overridden to the local tiny captioner, loads its data through the
    trainer's own loader in --dry-run (verl: create_rl_dataset; trl: the GRPO dataset + the processor)."""
    from caprl_kit.config import load_config

    def data(task: str, prefix: str = "") -> list[str]:
        video = task == "video"
        train = str(curated_video) if video else str(curated / "out" / "dataset" / "train.parquet")
        val = str(curated_video) if video else str(curated / "out" / "dataset" / "val.parquet")
        return [f"{prefix}data.train_files=[{train}]", f"{prefix}data.val_files=[{val}]"]

    cfg = load_config(name)
    overrides = [f"policy={tiny_models['captioner']}"] + data(cfg.task)
    if cfg.method == "dpo":  # preference pairs of the curated images (caprl train pairs' format)
        overrides[1] = f"data.train_files=[{pairs_file(curated)}]"
    for i, stage in enumerate(cfg.stages):  # a curriculum: every stage's own data too
        overrides += data(stage.get("task", cfg.task), f"stages.{i}.")
    result = runner.invoke(app, ["train", "--config", name, "--dry-run", *overrides])
    assert result.exit_code == 0, result.output
    video_tasks = [s.get("task", cfg.task) for s in cfg.stages] if cfg.stages else [cfg.task]
    trainers = [s.get("trainer", cfg.trainer) for s in cfg.stages] if cfg.stages else [cfg.trainer]
    # verl decodes video files with torchcodec/decord (qwen_vl_utils): without one the video check says it skipped;
    # trl decodes them with caprl's media layer
    skipped = result.output.count("needs torchcodec or decord")
    verl_video = list(zip(video_tasks, trainers)).count(("video", "verl"))
    assert skipped == (0 if importlib.util.find_spec("torchcodec") else verl_video)
    # verl: one line for the training files and one for the validation files; trl: one line
    n_checks = (result.output.count("create_rl_dataset loaded all") // 2 + result.output.count("trl: loaded")
                + result.output.count("dpo: the first pair collates"))
    assert n_checks == len(video_tasks) - skipped >= 0 and n_checks + skipped >= 1, result.output


# --------------------------------------------------------------------------- the official data as published


@pytest.mark.slow
def test_official_qa75k_parquet_through_verls_create_rl_dataset_and_trl(tiny_models, tmp_path: Path) -> None:
    from official_layouts import write_qa75k

    data = write_qa75k(tmp_path / "CapRL-QA-75K" / "train-00000-of-00001.parquet")
    conf = tmp_path / "verl.yaml"
    conf.write_text(json.dumps(verl_cfg(str(tiny_models["captioner"]), data, data)))
    result = runner.invoke(app, ["train", "-c", str(conf), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "create_rl_dataset loaded all 4 rows" in result.output  # verl's own loader, through CaprlRLDataset
    assert "data.custom_cls.name=CaprlRLDataset" in " ".join(result.output.split())
    # TRL reads the same file as published: the single image column becomes its images list
    from caprl_kit.train.trl_grpo import load_rl_dataset

    ds = load_rl_dataset([str(data)])
    assert len(ds) == 4 and ds[0]["images"][0].size == (112, 112)
    assert ds[0]["prompt"] == [{"role": "user", "content": "Please describe this image in detail."}]
    trl = trl_cfg(tiny_models, Path("unused"), tmp_path / "o", steps=1,
                  data={"train_files": [str(data)], "max_response_length": 8})
    from caprl_kit.train.checks import check_data

    check_data(trl, sft=False)  # "image" stands in for "images"


@pytest.mark.slow
def test_official_video_qa20k_jsonl_rows_resolve_against_media_root(tiny_models, tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer

    from caprl_kit.rewards.base import decode_ground_truth
    from caprl_kit.train.verl_dataset import CaprlRLDataset
    from official_layouts import write_video_qa20k

    path, media = write_video_qa20k(tmp_path)
    model = str(tiny_models["captioner"])
    cfg = OmegaConf.create({"prompt_key": "prompt", "video_key": "videos", "max_prompt_length": 4096,
                            "filter_overlong_prompts": False, "media_root": str(media)})
    ds = CaprlRLDataset([str(path)], AutoTokenizer.from_pretrained(model), cfg, AutoProcessor.from_pretrained(model))
    row = ds[0]
    video = next(part for part in row["raw_prompt"][0]["content"] if part["type"] == "video")
    assert video["video"] == str(media / "0_30_s_youtube_v0_1/videos/ytb_clip0.mp4") and Path(video["video"]).is_file()
    (mcq,) = decode_ground_truth(row["reward_model"]["ground_truth"])  # "A. Black" read as label A
    assert mcq.choices == ["A) Black", "B) White"] and mcq.answer == "B"


@pytest.mark.slow
def test_caprlpp_recipe_has_the_official_launch_settings_in_verls_composed_config() -> None:
    from caprl_kit.config import load_config
    from caprl_kit.train.verl import compose

    v = compose(load_config("train/caprlpp_video_qwen3vl4b_verl"))  # verl's own Hydra composition
    actor, rollout = v.actor_rollout_ref.actor, v.actor_rollout_ref.rollout
    assert (v.algorithm.adv_estimator, actor.use_kl_loss, actor.loss_agg_mode) == ("rloo", False,
                                                                                  "seq-mean-token-mean")
    assert (rollout.n, actor.optim.lr, actor.optim.lr_warmup_steps, v.data.train_batch_size) == (8, 1e-5, 20, 128)
    assert (v.trainer.total_epochs, actor.strategy, rollout.mode) == (3, "fsdp2", "async")
    assert (v.data.max_prompt_length, v.data.max_response_length, rollout.max_model_len) == (13000, 4096, 18000)
    assert v.data.custom_cls.name == "CaprlRLDataset" and v.data.media_root == "data/LLaVA-Video-178K"
