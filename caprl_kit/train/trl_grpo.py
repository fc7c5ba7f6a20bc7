"""The embedded trainer: TRL's GRPOTrainer on a Qwen-VL captioner with the CapRL reward (one machine, CPU or one
GPU). Images only: TRL's GRPOTrainer has no video inputs — video training goes through ``trainer: verl``.

Data: the curated Parquet/JSONL as is (prompt messages with the ``<image>`` placeholder, ``images`` paths,
``reward_model.ground_truth``). Reward: ``CaprlReward`` (QA accuracy through the configured answerer + length).
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
from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.official import normalize_rl_row
from caprl_kit.train.trl_callbacks import read_val_rows
from caprl_kit.train.trl_policy import load_policy
from caprl_kit.train.trl_run import fit, load_files, shared_args


def train_grpo(cfg: TrainConfig, *, progress: Progress | None = None, policy: str | None = None) -> RunReport:
    from trl import GRPOTrainer

    progress = progress or NullProgress()
    Path(str(cfg.output_dir)).mkdir(parents=True, exist_ok=True)
    policy = policy or cfg.policy
    processor, model = load_policy(cfg, policy)
    vocab = processor.tokenizer.get_vocab()
    suppress = [vocab[x] for x in VISION_TOKENS if x in vocab]  # the same tokens the transformers back end bans
    reward = CaprlReward(cfg.reward, tokenizer=processor.tokenizer)
    train = load_rl_dataset(cfg.data.train_files, cfg.data.image_key, cfg.data.media_root)
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
    ds = load_rl_dataset(cfg.data.train_files, cfg.data.image_key, cfg.data.media_root)
    row = ds[0]
    messages = [  # TRL puts the image part first into the user turn
        chat.message(m["role"], [{"type": "image"}, {"type": "text", "text": m["content"]}])
        if m["role"] == "user"
        else m
        for m in row["prompt"]
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=row["images"][:1], return_tensors="pt")
    n_tokens = int(enc["input_ids"].shape[1])
    if n_tokens > cfg.data.max_prompt_length:
        raise ConfigError(
            [
                ConfigIssue(
                    "data.max_prompt_length",
                    f"the first prompt has {n_tokens} tokens (image included), over {cfg.data.max_prompt_length}",
                    "raise it or lower trl.max_pixels",
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
