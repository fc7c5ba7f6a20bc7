"""fsspec helpers: any URL (local, memory://, s3://, gs://) and atomic writes via temp name + rename."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARK = ".tmp-"


def url_to_fs(url: str, limits: Any = None) -> tuple[Any, str]:
    """fsspec's filesystem and path for ``url``; an http(s) URL's filesystem waits at most ``limits``
    (``io.urls.UrlLimits``; default: ``DEFAULT_LIMITS``) to connect and per read."""
    from caprl_kit.io.urls import fsspec_options

    fs, path = fsspec.core.url_to_fs(str(url), **fsspec_options(str(url), limits))
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def tmp_name(path: str) -> str:
    """A sibling temp name that no reader globbing ``*.parquet`` / ``*.json`` will pick up."""
    head, _, tail = path.rpartition("/")
    return f"{head}/.{tail}{TMP_MARK}{uuid.uuid4().hex[:8]}"


def atomic_write_bytes(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` so that ``path`` either does not exist or holds all of it."""
    tmp = tmp_name(path)
    fs.makedirs(path.rpartition("/")[0] or ".", exist_ok=True)
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
        if isinstance(fs, LocalFileSystem):
            fh.flush()
            import os

            os.fsync(fh.fileno())
    commit(fs, tmp, path)


def commit(fs: Any, tmp: str, path: str) -> None:
    """Rename ``tmp`` over ``path`` (atomic on POSIX; a single copy+delete on object stores)."""
    if isinstance(fs, LocalFileSystem):
        import os

        os.replace(tmp, path)
    else:
        fs.mv(tmp, path)


def atomic_write_text(fs: Any, path: str, text: str) -> None:
    atomic_write_bytes(fs, path, text.encode())


def remove_stale_tmp(fs: Any, directory: str) -> int:
    """Delete temp files left by a killed run; returns how many."""
    if not fs.exists(directory):
        return 0
    stale = [p for p in fs.ls(directory, detail=False) if TMP_MARK in p.rpartition("/")[2]]
    for p in stale:
        fs.rm(p)
    return len(stale)


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Build the local directory ``target`` under a hidden sibling name and swap it in when the block finishes.

    A killed or failed build leaves ``target`` as it was (absent, or its previous complete version) and only a
    hidden ``.NAME.partial`` that the next build removes; never a half-written directory that looks complete.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.partial")
    old = target.with_name(f".{target.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)  # a rename, not a delete: a kill here leaves no half-deleted target
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
