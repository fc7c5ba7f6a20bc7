"""Precomputed captions for eval's stage 2 (``captions:``): a caption file in the CapRL-2M / CapRL-Video-178K style
(JSONL or Parquet rows ``{"image"|"video": path, "caption": text}``; ``caprl annotate``'s ``captions.jsonl`` is one),
used as published: stage 1 is skipped and the answerer reads these captions. Relative media paths resolve against
``captions.media_root`` (default: the file's folder) and are matched to the benchmark's media by their resolved
path; several rows for one media are its n captions, and so is a row's ``captions`` list (``caprl annotate``'s
``captions.jsonl`` when it sampled n > 1; its ``caption`` is the list's first). A benchmark item the file does not
caption is a ``no_caption`` row, counted and left out of M_Acc/BoN."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import Counter

from pydantic import Field

from caprl_kit.config import ConfigModel
from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.io.config import Paths
from caprl_kit.io.readers import expand_paths, paths_label
from caprl_kit.io.rows import read_rows
from caprl_kit.monitors import caption_flags, flag_counts, flag_rates

MEDIA_COLUMNS = ("image", "video", "path", "images", "videos")


class CaptionsFileConfig(ConfigModel):
    path: Paths = Field(
        description="JSONL/Parquet of {image|video: path, caption: text} rows (CapRL-2M / "
        "CapRL-Video-178K style, or caprl annotate's captions.jsonl); several: a glob or a list of files"
    )
    media_root: str | None = Field(None, description="Root for relative media paths (default: each file's folder)")
    caption_column: str = Field("caption", description="Column holding the caption text")


def _norm(path: str) -> str:
    return path if "://" in path else os.path.normpath(os.path.abspath(path))


def read_captions(cfg: CaptionsFileConfig) -> dict[str, list[str]]:
    """Resolved media path -> its captions, in file order (several files: one after the other)."""
    out: dict[str, list[str]] = {}
    files = expand_paths(cfg.path, "captions.path", "CapRL-2M/*.parquet") or [str(cfg.path)]
    for file in files:
        _read_file(cfg, file, out)
    return out


def _read_file(cfg: CaptionsFileConfig, file: str, out: dict[str, list[str]]) -> None:
    rows = read_rows(file, key="captions.path")
    root = cfg.media_root or posixpath.dirname(file)
    for n, row in enumerate(rows, 1):
        media = next((row[c] for c in MEDIA_COLUMNS if row.get(c)), None)
        media = media[0] if isinstance(media, list) and media else media
        text = row.get(cfg.caption_column)
        many = row.get("captions") if cfg.caption_column == "caption" else None  # annotate's n > 1 captions.jsonl
        texts = many if isinstance(many, list) and many and all(isinstance(t, str) for t in many) else [text]
        if not isinstance(media, str) or not all(isinstance(t, str) for t in texts):
            raise ConfigError(
                [
                    ConfigIssue(
                        "captions.path",
                        f"{file} row {n} needs a media path ("
                        f"{' / '.join(MEDIA_COLUMNS)}) and a '{cfg.caption_column}' text",
                        "set captions.caption_column, or fix the row",
                    )
                ]
            )
        full = media if "://" in media or media.startswith("/") else posixpath.join(root, media)
        out.setdefault(_norm(full), []).extend(str(t) for t in texts)


def precomputed(
    cfg: CaptionsFileConfig, media: list[tuple[str, str]], table: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float], str]:
    """(captions by the benchmark's media string, why the others have none, the captions' monitor rates, a digest
    of the captions used: the answers cached under another digest are not reused)."""
    captions: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for path, _ in media:
        caps = table.get(_norm(path))
        if caps:
            captions[path] = caps
        else:
            failed[path] = f"no_caption: {path} is not captioned in {paths_label(cfg.path)}"
    counts: Counter[str] = flag_counts(caption_flags(c) for caps in captions.values() for c in caps)
    digest = hashlib.sha256(json.dumps(captions, sort_keys=True).encode()).hexdigest()
    return captions, failed, (flag_rates(dict(counts)) if counts else {}), digest
