"""Checks ``caprl train`` runs before any model or dataset is loaded: the data files exist and carry the columns
the trainer reads, every question the reward will read passes the strict MCQ validator, and the policy is a
loadable vision-language model. Each failure is one ``CaprlError`` naming the file (or model) and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caprl_kit.backends import loading
from caprl_kit.errors import CaprlError
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.official import SINGLE_IMAGE


def file_columns(path: str, key: str) -> list[str]:
    """Top-level column names of a Parquet or JSONL file (schema / first row only), or a ``CaprlError``."""
    p = Path(path)
    if not p.is_file():
        raise CaprlError(
            f"{key}: {path} does not exist"
            + (" (it is a directory: list the files in it)" if p.is_dir() else "; fix the path in the config")
        )
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise CaprlError(f"{key}: {path} is not a readable Parquet file ({exc})") from None
    from caprl_kit.io.rows import iter_jsonl

    first = next(iter_jsonl(path, where=f"{key}: {path}"), None)  # the schema of JSONL: its first row
    if first is not None:
        return list(first)
    raise CaprlError(f"{key}: {path} is empty")


def check_columns(files: list[str], key: str, required: list[Any], what: str) -> None:
    for i, f in enumerate(files):
        names = file_columns(f, f"{key}.{i}")
        wanted = {c if isinstance(c, str) else " or ".join(c): (c,) if isinstance(c, str) else c for c in required}
        missing = [label for label, options in wanted.items() if not set(options) & set(names)]
        if missing:
            raise CaprlError(
                f"{key}.{i}: {f} is not {what}: it lacks column(s) {', '.join(missing)} (expected "
                f"{', '.join(wanted)}; found {', '.join(names) or 'none'})"
            )


def check_ground_truth(files: list[str], key: str) -> None:
    """Every row's ``reward_model.ground_truth`` read as the reward reads it (``decode_ground_truth``: the strict MCQ
    validator): the first bad one is refused naming the file, row and question, instead of failing the reward when
    the trainer reaches that row."""
    from caprl_kit.io.rows import read_rows
    from caprl_kit.rewards.base import decode_ground_truth

    for i, f in enumerate(files):
        columns = ["reward_model"] if f.endswith(".parquet") else None
        for n, row in enumerate(read_rows(f, columns=columns, key=f"{key}.{i}")):
            rm = row.get("reward_model")
            try:
                decode_ground_truth(rm.get("ground_truth") if isinstance(rm, dict) else None)
            except CaprlError as exc:
                raise CaprlError(
                    f"{key}.{i}: {f} row {n}: {exc}; fix or drop that question (caprl curate drops "
                    "invalid questions with their reason)"
                ) from None


def rl_columns(cfg: TrainConfig) -> list[str | tuple[str, ...]]:
    """Columns a training file needs; a tuple: one of them (CapRL-QA-75K's single ``image``, train/official.py)."""
    media = cfg.data.video_key if cfg.task == "video" else (cfg.data.image_key, SINGLE_IMAGE)
    return [cfg.data.prompt_key, media, "reward_model"]


def check_data(cfg: TrainConfig, *, sft: bool = True) -> None:
    """Training, validation (and SFT) files: present, readable, and in the layout the trainer reads."""
    what = "a curated QA file (`caprl curate` writes them to OUTPUT/dataset/)"
    if cfg.method == "dpo":
        from caprl_kit.train.trl_dpo import count_pairs, refuse_no_pairs

        refuse_no_pairs(cfg.data.train_files)  # "0 pairs", not a reader's error on an empty file
        check_columns(
            [f for f in cfg.data.train_files if count_pairs(f) != 0],
            "data.train_files",
            ["images", "prompt", "chosen", "rejected"],
            "a pairs file (`caprl train pairs` writes OUTPUT/pairs.parquet)",
        )
    else:
        check_columns(cfg.data.train_files, "data.train_files", rl_columns(cfg), what)
        check_ground_truth(cfg.data.train_files, "data.train_files")
    check_columns(cfg.data.val_files, "data.val_files", rl_columns(cfg), what)
    check_ground_truth(cfg.data.val_files, "data.val_files")
    if sft and cfg.sft is not None:
        check_sft_data(cfg)


def check_sft_data(cfg: TrainConfig) -> None:
    s = cfg.sft
    assert s is not None
    media = s.video_column if cfg.task == "video" else s.image_column
    check_columns(
        s.data_files,
        "sft.data_files",
        [media, s.caption_column],
        f"an ({cfg.task}, caption) file for the warm start",
    )


def check_policy(policy: str, key: str = "policy") -> str:
    """The policy resolves (local directory or usable hub id), its weights are intact, and it sees images."""
    hf_config = loading.load_hf_config(policy, key=key)
    loading.require_vision_language(policy, hf_config, key=key)
    return policy


def preflight(cfg: TrainConfig) -> None:
    """Everything ``trainer: trl`` needs, checked in seconds before a model is loaded or an output is touched."""
    if cfg.trainer == "verl":  # verl reads the data on the cluster; only local files it cannot do without
        for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
            for i, f in enumerate(files):
                if "://" not in f and not Path(f).is_file():
                    raise CaprlError(f"{key}.{i}: {f} does not exist; fix the path in the config")
        return
    check_data(cfg)
    check_policy(cfg.policy)
