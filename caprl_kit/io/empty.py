"""An input that yields no item is an error, raised before anything is written (``runners.driver.begin``): the
message names what was looked for (the media extensions, the manifest columns, the glob) and where, so an empty
folder, a folder of other files or a manifest with no rows never "succeeds" with 0 items."""

from __future__ import annotations

import posixpath

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


def _other_files(cfg: InputConfig) -> str:
    """What the folder holds instead: 'it is empty', or its count of other files with a few names."""
    fs, root = url_to_fs(cfg.path)
    try:
        files = [p for p in fs.find(root.rstrip("/")) if not posixpath.basename(p).startswith(".")]
    except OSError:
        return ""
    if not files:
        return "; it is empty"
    names = ", ".join(posixpath.relpath(p, root.rstrip("/")) for p in files[:3])
    return f"; it holds {len(files)} other file(s), e.g. {names}"


def describe(cfg: InputConfig) -> str:
    """The message for an input (``input.path``) that listed no item."""
    from caprl_kit.io.readers import detect_format

    fmt = detect_format(cfg)
    if fmt == "folder":
        return (
            f"input.path {cfg.path} holds no media files, so there is nothing to do and nothing was written: "
            f"looked for {_extensions(cfg)} in the folder and its sub-folders{_other_files(cfg)}. Point "
            "input.path at a folder of images or videos, or list their suffixes in input.image_extensions"
        )
    if fmt == "webdataset":  # a glob that matches nothing is refused by the reader, naming the glob
        return (
            f"the .tar shard(s) of input.path {cfg.path} hold no media member, so there is nothing to do and "
            f"nothing was written: looked for members with {_extensions(cfg)}"
        )
    if fmt == "hf_dataset":
        return f"the dataset at input.path {cfg.path} has no rows, so there is nothing to do and nothing was written"
    column = f"'{cfg.path_column}' (input.path_column)"
    if cfg.bytes_column:
        column += f" or '{cfg.bytes_column}' (input.bytes_column)"
    return (
        f"input.path {cfg.path} has no rows, so there is nothing to do and nothing was written: looked for "
        f"rows with a {column} column. Point input.path at a manifest with rows"
    )
