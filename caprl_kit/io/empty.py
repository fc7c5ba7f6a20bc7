"""An input that yields no item is an error, raised before anything is written (``runners.driver.begin``): the
message names what was looked for (the media extensions, the manifest columns, the glob) and where, so an empty
folder, a folder of other files or a manifest with no rows never "succeeds" with 0 items. A folder that holds no
media but manifests (gen_qa's ``part_*.jsonl`` output folder) is told to give its files as a glob or a list."""

from __future__ import annotations

import posixpath
import re
from collections import Counter

from caprl_kit.errors import CaprlError
from caprl_kit.io.config import InputConfig
from caprl_kit.io.fs import url_to_fs


class EmptyInput(CaprlError):
    """The input yields no item."""


def _extensions(cfg: InputConfig) -> str:
    return (
        f"the image extensions {' '.join(cfg.image_extensions)} and the video extensions "
        f"{' '.join(cfg.video_extensions)} (input.image_extensions / input.video_extensions)"
    )


def _files(root: str) -> list[str] | None:
    """The folder's files (hidden ones left out), relative to it; None where it cannot be listed."""
    fs, path = url_to_fs(root)
    try:
        found = [p for p in fs.find(path.rstrip("/")) if not posixpath.basename(p).startswith(".")]
    except OSError:
        return None
    return sorted(posixpath.relpath(p, path.rstrip("/")) for p in found)


def _other_files(files: list[str] | None) -> str:
    """What the folder holds instead: 'it is empty', or its count of other files with a few names."""
    if files is None:
        return ""
    if not files:
        return "; it is empty"
    return f"; it holds {len(files)} other file(s), e.g. {', '.join(files[:3])}"


def suggested_glob(root: str, names: list[str]) -> str:
    """A glob over the most numerous family of ``names`` (digits as ``*``: ``part_0.jsonl``, ``part_1.jsonl`` ->
    ``part_*.jsonl``; on a tie the shorter pattern, so gen_qa's ``progress_part_*.jsonl`` is not the one offered)."""
    families = Counter(re.sub(r"\d+", "*", n) for n in names)
    pattern = min(families, key=lambda p: (-families[p], len(p), p))
    return f"{root.rstrip('/')}/{pattern}"


def _manifests_in_folder(cfg: InputConfig, files: list[str]) -> str | None:
    """The message for a folder with no media file but manifests (JSONL/CSV/Parquet): give the files."""
    from caprl_kit.io.readers import SUFFIX_FORMATS

    manifests = [f for f in files if posixpath.splitext(f.lower())[1] in SUFFIX_FORMATS]
    if not manifests:
        return None
    path = str(cfg.path)
    glob = suggested_glob(path, manifests)
    return (
        f"input.path {path} is a folder with no media files but {len(manifests)} manifest file(s) "
        f"({', '.join(manifests[:3])}{', ...' if len(manifests) > 3 else ''}); a folder is read for its images and "
        f"videos ({_extensions(cfg)}), so nothing was written: give the files: input.path={glob} (a glob) or a "
        "list of them"
    )


def describe(cfg: InputConfig) -> str:
    """The message for an input (``input.path``) that listed no item."""
    from caprl_kit.io.readers import detect_format, input_label

    fmt = detect_format(cfg)
    if fmt == "folder":
        files = _files(str(cfg.path))
        manifests = _manifests_in_folder(cfg, files) if files else None
        if manifests:
            return manifests
        return (
            f"input.path {cfg.path} holds no media files, so there is nothing to do and nothing was written: "
            f"looked for {_extensions(cfg)} in the folder and its sub-folders{_other_files(files)}. Point "
            "input.path at a folder of images or videos, or list their suffixes in input.image_extensions"
        )
    label = input_label(cfg)
    if fmt == "webdataset":  # a glob that matches nothing is refused by the reader, naming the glob
        return (
            f"the .tar shard(s) of input.path {label} hold no media member, so there is nothing to do and "
            f"nothing was written: looked for members with {_extensions(cfg)}"
        )
    if fmt == "hf_dataset":
        return f"the dataset at input.path {label} has no rows, so there is nothing to do and nothing was written"
    column = f"'{cfg.path_column}' (input.path_column)"
    if cfg.bytes_column:
        column += f" or '{cfg.bytes_column}' (input.bytes_column)"
    return (
        f"input.path {label} has no rows, so there is nothing to do and nothing was written: looked for "
        f"rows with a {column} column. Point input.path at a manifest with rows"
    )
