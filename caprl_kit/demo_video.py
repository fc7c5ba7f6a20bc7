"""The video learning proof on a CPU: CapRL++ video GRPO with the embedded trainer on tiny models built here.

Steps (each resumable; rerunning skips what is done):
1. build the tiny random-weight Qwen2.5-VL captioner (closed word-level vocabulary with whole ``[00:0N]`` stamps);
2. write the synthetic video task (``synthetic_video``): a shape that changes colour and moves at known seconds,
   five MCQs per clip (shape, start colour, the colour it turns, where it moves, what happens first), split by
   video, complete and *incomplete* timestamped reference captions;
3. ``caprl curate`` the three splits in import mode (the lexical answerer reading the complete caption stands in for
   the visual answerer), so the rows are curated video rows: ``videos`` + the ``<video>`` CapRL++ prompt;
4. ``caprl train`` with ``train/sanity_tiny_video_trl``: SFT warm start on the incomplete captions, then GRPO with
   QA accuracy + 0.2 timestamp format + 0.2 length, the checkpoint chosen on the validation split;
5. held-out accuracy on the test split of the SFT-only and the RL captioner (greedy captions of the frames the
   policy trained on, every question once, the lexical answerer) and the video-blind ceiling (the best score any
   single fixed caption reaches: the training set's complete captions as candidates).

The test split is captioned the way the policy saw videos in training and validation (``train/video_frames.py``):
``caprl eval`` shows a video to the model through the processor's video input, which this policy never saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress

if TYPE_CHECKING:
    from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)

RECIPE = "train/sanity_tiny_video_trl"
#: the five questions of a clip, by the words that open them (synthetic_video.VideoFacts.mcqs)
QUESTION_KINDS = {
    "shape": "What shape",
    "start_color": "What color is the object at the start",
    "turn_color": "What color does the object turn",
    "move": "Where does the object move",
    "first": "What happens first",
}


def held_out(cfg: TrainConfig, model_dir: str, dataset: str, out: Path) -> dict[str, Any]:
    """Held-out QA accuracy of ``model_dir``'s greedy captions of ``dataset``'s videos, shown as in training (the
    validation captioner of ``trl_callbacks.ValidationCallback`` on ``dataset``), with the accuracy per question kind
    and the captions' mean timestamp-format score."""
    from caprl_kit.rewards.timestamp_format import timestamp_format_score
    from caprl_kit.train.trl_callbacks import ValidationCallback
    from caprl_kit.train.trl_policy import load_policy

    test = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_files": [dataset]})})
    processor, model = load_policy(test, model_dir)
    judge = ValidationCallback(test, processor, out)
    captions = judge.captions(model)
    details = judge.scorer.score(captions, judge.qas).details
    kinds: dict[str, list[bool]] = {k: [] for k in QUESTION_KINDS}
    for qas, d in zip(judge.qas, details):
        for q, ok in zip(qas, d["correct"]):
            kind = next(k for k, opening in QUESTION_KINDS.items() if q.question.startswith(opening))
            kinds[kind].append(bool(ok))
    n = max(1, len(captions))
    return {
        "accuracy": sum(d["qa_reward"] for d in details) / n,
        "by_question": {k: sum(v) / len(v) for k, v in kinds.items() if v},
        "timestamp_format": sum(timestamp_format_score(c) for c in captions) / n,
        "samples": captions[:3],
    }


def blind_ceiling_of(cfg: TrainConfig, dataset: str, candidates_file: Path) -> tuple[float, str]:
    """The video-blind ceiling on ``dataset``: the best mean QA accuracy of one fixed caption used for every video,
    over the complete captions in ``candidates_file`` (the training manifest)."""
    from caprl_kit.evaluate.qa_utility import blind_ceiling
    from caprl_kit.io.rows import read_rows
    from caprl_kit.rewards.base import decode_ground_truth
    from caprl_kit.rewards.qa import QAScorer

    qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in read_rows(dataset)]
    candidates = list(dict.fromkeys(r["caption"] for r in read_rows(str(candidates_file))))
    scorer = QAScorer(cfg.reward.qa.model_copy(update={"mode": "all_qa"}))
    return blind_ceiling(scorer, candidates, qas, NullProgress())


def run_video_proof(
    out_dir: str | Path = "demo_video_output",
    *,
    seed: int = 0,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 100,
    sft_steps: int | None = None,
    rl_steps: int | None = None,
    eval_steps: int | None = None,
    overrides: Sequence[str] = (),
    progress: Progress | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the video proof into ``out_dir``; returns the summary (also ``summary.json``): SFT-only and RL held-out
    accuracy, the video-blind ceiling, the wall and CPU time of this process. ``sft_steps`` / ``rl_steps`` /
    ``eval_steps`` / ``overrides`` (``key=value`` on the recipe) shorten it. ``out_dir`` is claimed as the demo claims
    its own: a new or empty folder, or a previous video proof."""
    from caprl_kit.io.lock import output_lock_scope
    from caprl_kit.io.rundir import prepare_output
    from caprl_kit.models.tiny import check_options

    check_options(seed, tokenizer="words")
    with output_lock_scope():
        prepare_output(str(out_dir), "demo video", overwrite=overwrite, same_command=True, option="--out")
        return _run(
            Path(out_dir),
            seed=seed,
            counts=(n_train, n_val, n_test),
            steps=(sft_steps, rl_steps, eval_steps),
            overrides=list(overrides),
            progress=progress or NullProgress(),
            overwrite=overwrite,
        )


def _run(
    out: Path,
    *,
    seed: int,
    counts: tuple[int, int, int],
    steps: tuple[int | None, int | None, int | None],
    overrides: list[str],
    progress: Progress,
    overwrite: bool,
) -> dict[str, Any]:
    from caprl_kit.config import load_config
    from caprl_kit.demo import curate_split
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.synthetic_video import write_video_task
    from caprl_kit.train.pipeline import run as train

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    summary: dict[str, Any] = {"output_dir": str(out), "seed": seed}
    models = build_tiny_models(out / "models", seed=seed, tokenizer="words")
    n_train, n_val, n_test = counts
    data = out / "data"
    if overwrite or not (data / "test" / "manifest.jsonl").is_file():
        manifests = write_video_task(data, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    else:
        manifests = {split: data / split / "manifest.jsonl" for split in ("train", "val", "test")}
    train_dir = out / "train"
    datasets = {split: out / "curate" / split / "dataset" / "train.parquet" for split in ("train", "val", "test")}
    recipe = [
        f"policy={models['captioner']}",
        f"data.train_files=[{datasets['train']}]",
        f"data.val_files=[{datasets['val']}]",
        f"sft.data_files=[{manifests['train']}]",
        f"output_dir={train_dir}",
        f"algorithm.seed={seed}",
    ]
    for key, value in zip(("sft.max_steps", "algorithm.max_steps", "algorithm.eval_steps"), steps):
        if value:
            recipe.append(f"{key}={value}")
    cfg = cast("TrainConfig", load_config(RECIPE, [*recipe, *overrides], kind="train"))
    assert cfg.sft is not None  # the recipe warm-starts
    curated = {  # the rows get the prompt the warm start uses
        split: curate_split(
            manifests[split],
            out / "curate" / split,
            overwrite=overwrite,
            progress=progress,
            export={"video_prompt": cfg.sft.prompt or "caprl_video_timestamped"},
        )
        for split in ("train", "val", "test")
    }
    assert all(Path(curated[k]["dataset"]) == v for k, v in datasets.items())
    summary["curate"] = {k: {x: y for x, y in v.items() if x != "funnel"} for k, v in curated.items()}

    t0 = time.perf_counter()
    if overwrite or not (train_dir / "final" / "config.json").is_file():
        report = train(cfg, overwrite=overwrite, progress=progress)
        summary["train"] = dict(report.metrics)
    else:
        log.info("reusing the finished training run in %s", train_dir)
        summary["train"] = {}
    summary["train"]["wall_s"] = time.perf_counter() - t0
    best = json.loads((train_dir / "best.json").read_text())
    summary["train"].update(best_step=best["step"], best_val_qa_accuracy=best["val_qa_accuracy"])
    summary["train"]["reward_curve"] = reward_curve(train_dir / "metrics.jsonl")

    test = str(datasets["test"])
    sft = held_out(cfg, str(train_dir / "sft"), test, out / "eval" / "sft")
    rl = held_out(cfg, str(train_dir / "best"), test, out / "eval" / "rl")
    ceiling, caption = blind_ceiling_of(cfg, test, manifests["train"])
    summary["eval"] = {
        "A0_sft": sft["accuracy"],
        "A1_rl": rl["accuracy"],
        "gain": rl["accuracy"] - sft["accuracy"],
        "blind_ceiling": ceiling,
        "blind_caption": caption,
        "sft": sft,
        "rl": rl,
    }
    summary["wall_s"] = time.perf_counter() - wall0
    summary["cpu_s"] = cpu_seconds() - cpu0
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and of its finished child processes."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reward_curve(metrics: Path) -> list[dict[str, float]]:
    """Per logged GRPO step: the mean QA, timestamp-format and length rewards, and validation accuracy."""
    from caprl_kit.io.rows import read_rows

    keep = ("reward_detail/qa_reward", "reward_detail/format_reward", "reward_detail/length_reward", "val/qa_accuracy")
    return [
        {"step": r["step"], **{k: r[k] for k in keep if k in r}}
        for r in read_rows(str(metrics), missing_ok=True)
        if any(k in r for k in keep)
    ]
