"""``method: dpo``: TRL's DPOTrainer on preference pairs from ``caprl train pairs`` (images only), with the same
outputs as GRPO: ``checkpoint-N/`` (resumable), ``metrics.jsonl``, validation selection into ``best/`` (held-out
QA accuracy of greedy captions, ``trl_callbacks.ValidationCallback``), ``final/`` (model + processor).

Data: ``data.train_files`` hold pairs in TRL's conversational format (``images``, ``prompt``, ``chosen``,
``rejected``: the ``preference_pair`` schema); ``data.val_files`` the curated QA rows used for selection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caprl_kit import chat
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.trl_policy import load_policy, load_processor
from caprl_kit.train.trl_run import fit, load_files, shared_args

log = get_logger(__name__)
PAIR_COLUMNS = ("images", "prompt", "chosen", "rejected")


def count_pairs(path: str) -> int | None:
    """Rows of a pairs file without loading it (Parquet metadata; JSONL: non-blank lines); None when it cannot be
    counted (missing, unreadable: the checks that read it say why)."""
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            return int(pq.read_metadata(path).num_rows)
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except Exception:  # noqa: BLE001 - any unreadable file is reported by the check that reads it
        return None


def refuse_no_pairs(files: list[str], key: str = "data.train_files") -> None:
    """``method: dpo`` with files that hold 0 pairs in all: one message saying so (not a reader's error)."""
    counts = [count_pairs(f) for f in files]
    if files and all(n == 0 for n in counts):
        raise CaprlError(
            f"{key}: {', '.join(files)} hold{'s' if len(files) == 1 else ''} 0 pairs: nothing to train "
            "on with method: dpo. `caprl train pairs` keeps only pairs whose reward margin reaches "
            "pairs.min_margin (see its pairs_summary.json): lower pairs.min_margin, or sample more "
            "captions per image (captioner.sampling.n)"
        )


def load_pairs(files: list[str]) -> Any:
    """The pairs files (Parquet or JSONL) as a ``datasets.Dataset`` with decoded-on-access images; a file that is
    not a pairs file is one message naming the missing columns, files with no pair say "0 pairs"."""
    import datasets

    refuse_no_pairs(files)
    files = [f for f in files if count_pairs(f) != 0]  # an empty file beside others adds nothing (and fails datasets)
    ds = load_files(files, "the pairs")
    missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
    if missing:
        raise CaprlError(
            f"{', '.join(files)}: not a pairs file (no column(s) {', '.join(missing)}); method: dpo "
            "trains on the output of `caprl train pairs` (pairs.parquet)"
        )
    if len(ds) == 0:
        raise CaprlError(
            f"{', '.join(files)}: no pairs to train on (see pairs_summary.json: lower pairs.min_margin "
            "or sample more captions per image)"
        )
    keep = [c for c in ds.column_names if c not in PAIR_COLUMNS]
    return ds.remove_columns(keep).cast_column("images", datasets.Sequence(datasets.Image()))


def check_pairs(cfg: TrainConfig) -> list[str]:
    """Dry-run lines: the pairs load, and the first one goes through TRL's own vision preference collator with the
    policy's processor (image included), as the trainer will batch it."""
    missing = [f for f in cfg.data.train_files + cfg.data.val_files if not Path(f).is_file()]
    if missing:
        return [f"dpo: SKIPPED the pairs check: missing file(s) {', '.join(missing)}"]
    from caprl_kit.train.checks import check_columns, check_policy, rl_columns

    check_columns(cfg.data.val_files, "data.val_files", rl_columns(cfg), "a curated QA file (validation)")
    ds = load_pairs(cfg.data.train_files)
    lines = [f"dpo: {len(ds)} preference pairs in {', '.join(cfg.data.train_files)}"]
    if not Path(cfg.policy).is_dir():
        return [*lines, f"dpo: SKIPPED the collator check: the policy {cfg.policy} is not a local directory"]
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    check_policy(cfg.policy)
    processor = load_processor(cfg, cfg.policy)
    batch = DataCollatorForVisionPreference(processor)([dict(ds[0])])
    check_max_length(cfg, processor, ds)
    return [
        *lines,
        f"dpo: the first pair collates to {int(batch['input_ids'].shape[1])} tokens (chosen and rejected, "
        "image included) with the policy's processor",
    ]


def check_max_length(cfg: TrainConfig, processor: Any, ds: Any) -> None:
    """``dpo.max_length`` must leave the whole prompt (its image tokens above all) and some caption: TRL's vision
    collator cuts from the right, and a prompt cut inside its image tokens fails in the model."""
    if cfg.dpo.max_length is None:
        return
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    empty = [chat.message("assistant", "")]
    pair = {**dict(ds[0]), "chosen": empty, "rejected": empty}
    prompt = int(DataCollatorForVisionPreference(processor)([pair])["input_ids"].shape[1])
    if cfg.dpo.max_length <= prompt:
        raise ConfigError(
            [
                ConfigIssue(
                    "dpo.max_length",
                    f"is {cfg.dpo.max_length}, but the first pair's prompt alone is {prompt} tokens (image included)",
                    f"raise it well above {prompt}, set it to null, or lower trl.max_pixels",
                )
            ]
        )


def train_dpo(cfg: TrainConfig, *, progress: Progress | None = None, policy: str | None = None) -> RunReport:
    from trl import DPOConfig, DPOTrainer

    progress = progress or NullProgress()
    Path(str(cfg.output_dir)).mkdir(parents=True, exist_ok=True)
    d = cfg.dpo
    policy = policy or cfg.policy
    train = load_pairs(cfg.data.train_files)
    processor, model = load_policy(cfg, policy)
    check_max_length(cfg, processor, train)
    losses = [d.loss_type] + (["sft"] if d.sft_weight else [])
    args = DPOConfig(
        **shared_args(cfg),
        beta=d.beta,
        loss_type=losses,
        loss_weights=[1.0, d.sft_weight] if d.sft_weight else None,
        per_device_train_batch_size=d.per_device_batch_size,
        gradient_accumulation_steps=d.gradient_accumulation_steps,
        max_length=d.max_length,
    )
    report = fit(
        cfg,
        DPOTrainer,
        args,
        model=model,
        processor=processor,
        train=train,
        policy=policy,
        progress=progress,
        stage="dpo",
    )
    report.metrics["pairs"] = float(len(train))
    return report
