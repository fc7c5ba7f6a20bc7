"""The embedded trainer: TRL's GRPOTrainer on a Qwen-VL captioner with the CapRL reward (one machine, CPU or one
GPU). Video rows reach the policy as their sampled frames, each after its timestamp text: TRL's GRPOTrainer passes
image inputs only (``train/video_frames.py``).

Data: the curated Parquet/JSONL as is (prompt messages with the ``<image>`` / ``<video>`` placeholder, ``images`` /
``videos`` paths, ``reward_model.ground_truth``). Reward: ``CaprlReward`` (the weighted terms of
``reward.components``: QA accuracy through the configured answerer, length, timestamp format, ...).
Outputs in OUTPUT/: ``checkpoint-N/`` (resumable), ``metrics.jsonl``, TensorBoard logs, ``final/`` (model +
processor, loadable by ``caprl annotate``/``caprl eval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caprl_kit import chat
from caprl_kit.backends import loading
from caprl_kit.backends.transformers_local import VISION_TOKENS
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.official import normalize_rl_row
from caprl_kit.train.trl_callbacks import read_val_rows
from caprl_kit.train.trl_policy import load_policy
from caprl_kit.train.trl_run import fit, load_files, shared_args
from caprl_kit.train.video_frames import FrameSampler, one_video, timestamped


def train_grpo(cfg: TrainConfig, *, progress: Progress | None = None, policy: str | None = None) -> RunReport:
    from trl import GRPOTrainer

    progress = progress or NullProgress()
    Path(str(cfg.output_dir)).mkdir(parents=True, exist_ok=True)
    policy = policy or cfg.policy
    processor, model = load_policy(cfg, policy)
    vocab = processor.tokenizer.get_vocab()
    suppress = [vocab[x] for x in VISION_TOKENS if x in vocab]  # the same tokens the transformers back end bans
    reward = CaprlReward(cfg.reward, tokenizer=processor.tokenizer)
    train = training_rows(cfg)
    args = grpo_args(cfg, suppress, reward.weights if cfg.algorithm.reward_normalization == "per_term" else None)
    return fit(
        cfg,
        GRPOTrainer,
        args,
        model=model,
        processor=processor,
        train=train,
        policy=policy,
        progress=progress,
        stage="grpo",
        reward=reward,
        reward_funcs=reward.per_term() if cfg.algorithm.reward_normalization == "per_term" else [reward],
    )


def grpo_args(cfg: TrainConfig, suppress: Sequence[int] = (), term_weights: Sequence[float] | None = None) -> Any:
    """TRL's ``GRPOConfig`` for ``cfg``: ``algorithm.*`` where TRL has the same knob (kl_coef -> beta, entropy_coeff ->
    entropy_coef: the mean per-token entropy bonus, verl's with its default token-mean aggregation;
    reward_normalization: per_term -> multi_objective_aggregation=normalize_then_sum over one reward function per
    term, weighted by ``term_weights``), ``trl.*`` for the rest. The verl-only keys without a TRL equivalent are
    refused when the config is validated (``TrainConfig._trl_ignores``)."""
    from trl import GRPOConfig

    a, t = cfg.algorithm, cfg.trl
    return GRPOConfig(
        **shared_args(cfg),
        num_generations=a.num_generations,
        beta=a.kl_coef,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_completion_length=cfg.data.max_response_length,
        temperature=a.temperature,
        top_p=a.top_p,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        entropy_coef=a.entropy_coeff,
        generation_kwargs={"suppress_tokens": list(suppress)},
        multi_objective_aggregation="sum_then_normalize" if term_weights is None else "normalize_then_sum",
        reward_weights=None if term_weights is None else list(term_weights),
    )


def training_rows(cfg: TrainConfig) -> Any:
    """``data.train_files`` as TRL reads them: image rows, or (``task: video``) video rows with their frames."""
    d = cfg.data
    if cfg.task == "video":
        return load_video_rl_dataset(d.train_files, FrameSampler(cfg.media), d.video_key, d.media_root)
    return load_rl_dataset(d.train_files, d.image_key, d.media_root)


def load_video_rl_dataset(
    files: list[str], frames: FrameSampler, video_key: str = "videos", media_root: str | None = None
) -> Any:
    """Curated video rows (or CapRL-Video-QA-20K's) -> TRL's multimodal GRPO columns, made when a row is read:
    ``prompt`` (the ``<video>`` placeholder replaced by ``<t seconds>`` + an empty image part per sampled frame),
    ``images`` (the frames, ``frames`` sampling them by ``media.*``), plus every other column. Each row holds one
    video (checked here, naming the row)."""
    ds = load_files(files, "the training data")
    if video_key not in ds.column_names:
        raise CaprlError(f"the training data {', '.join(files)} has no {video_key!r} column (data.video_key)")
    ds = ds.map(
        lambda row: {video_key: normalize_rl_row(dict(row), video_key=video_key, media_root=media_root)[video_key]}
    )
    for i, videos in enumerate(ds[video_key]):
        one_video(videos, f"the training data ({', '.join(files)}) row {i}")
    ds = ds.remove_columns([c for c in ("image", "images") if c in ds.column_names])

    def to_trl(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        prompts, images = [], []
        for prompt, videos in zip(batch["prompt"], batch[video_key], strict=True):
            shown, stamps = frames(one_video(videos))
            prompts.append(timestamped(prompt, shown, stamps, payload=False))
            images.append(shown)
        return {**batch, "prompt": prompts, "images": images}

    return ds.with_transform(to_trl)


def load_rl_dataset(files: list[str], image_key: str = "images", media_root: str | None = None) -> Any:
    """Curated rows (or CapRL-QA-75K's, ``train/official.py``) -> TRL's multimodal GRPO columns: ``prompt``
    (messages without the ``<image>`` placeholder, TRL inserts the image part itself), ``images`` (decoded lazily by
    datasets), plus every other column."""
    import datasets

    ds = load_files(files, "the training data")

    def to_trl(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": chat.without_placeholders(row["prompt"]),
            "images": normalize_rl_row(dict(row), image_key, media_root=media_root)[image_key],
        }

    drop = [c for c in ("image",) if c in ds.column_names]
    ds = ds.map(to_trl, remove_columns=drop)
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))


def check_dataset(cfg: TrainConfig) -> list[str]:
    """Dry-run check for ``trainer: trl``: load the training (and validation) rows the way the trainer does and
    render the first prompt with the policy's processor, image included; skipped when the policy is not local."""
    if not Path(cfg.policy).is_dir():
        return [
            f"trl: SKIPPED the dataset check: the policy {cfg.policy} is not a local directory "
            "(its processor is needed to render the prompts)"
        ]
    missing = [f for f in cfg.data.train_files + cfg.data.val_files if not Path(f).is_file()]
    if missing:
        return [f"trl: SKIPPED the dataset check: missing data file(s) {', '.join(missing)}"]
    from transformers import AutoProcessor

    from caprl_kit.train.checks import check_data, check_policy, check_sft_data

    check_data(cfg, sft=False)
    check_policy(cfg.policy)
    sft_lines = []
    if cfg.sft is not None:
        missing_sft = [f for f in cfg.sft.data_files if not Path(f).is_file()]
        if missing_sft:
            sft_lines.append(f"trl: SKIPPED the warm-start data check: missing file(s) {', '.join(missing_sft)}")
        else:
            check_sft_data(cfg)
    processor = loading.load("processor", cfg.policy, AutoProcessor.from_pretrained, cfg.policy, key="policy")
    ds = training_rows(cfg)
    row = ds[0]
    if cfg.task == "video":  # the frames' empty image parts are in the prompt already
        messages, images = row["prompt"], row["images"]
    else:
        messages = [  # TRL puts the image part first into the user turn
            chat.message(m["role"], [{"type": "image"}, {"type": "text", "text": m["content"]}])
            if m["role"] == "user"
            else m
            for m in row["prompt"]
        ]
        images = row["images"][:1]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=images, return_tensors="pt")
    n_tokens = int(enc["input_ids"].shape[1])
    if n_tokens > cfg.data.max_prompt_length:
        raise ConfigError(
            [
                ConfigIssue(
                    "data.max_prompt_length",
                    f"the first prompt has {n_tokens} tokens ({'frames' if cfg.task == 'video' else 'image'} "
                    f"included), over {cfg.data.max_prompt_length}",
                    "raise it or lower trl.max_pixels"
                    + (" (or media.video_max_frames / video_max_pixels)" if cfg.task == "video" else ""),
                )
            ]
        )
    lines = [
        f"trl: loaded {len(ds)} training rows; the first prompt renders to {n_tokens} tokens with the policy's "
        "processor"
    ]
    if cfg.data.val_files:
        lines.append(f"trl: {len(read_val_rows(cfg))} validation items")
    return lines + sft_lines
