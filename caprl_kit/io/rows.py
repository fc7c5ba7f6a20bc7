"""Rows of a JSONL or Parquet file (any fsspec URL) as dicts: ``read_rows`` (a small file, whole) behind eval's caption
files and blind-caption candidates, the eval/demo reports' sample files and the trainers' validation rows;
``iter_jsonl`` (streamed) behind the JSONL manifest reader and ``caprl train pairs``. A line that is not
JSON is one error naming the file and line; ``key`` turns errors into a ``ConfigError`` on that config key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.fs import url_to_fs


def _fail(message: str, key: str | None, hint: str) -> Exception:
    return ConfigError([ConfigIssue(key, message, hint)]) if key else CaprlError(f"{message}; {hint}")


def iter_jsonl(url: str, *, key: str | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a JSON Lines file, streamed (blank lines skipped); a line that is not JSON, or text that is not
    UTF-8, is one error naming the file (and line)."""
    import fsspec

    try:
        with fsspec.open(url, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise _fail(
                            f"{url} line {number} is not valid JSON ({exc.msg})", key, "one JSON object per line"
                        ) from None
    except UnicodeDecodeError as exc:
        raise _fail(f"{url} is not UTF-8 text ({exc.reason})", key, "write JSON Lines in UTF-8") from None


def read_rows(
    url: str, *, columns: list[str] | None = None, key: str | None = None, missing_ok: bool = False
) -> list[dict[str, Any]]:
    """Every row of ``url`` (``.parquet``: Parquet; anything else: JSON Lines, blank lines skipped). ``columns``
    reads only those Parquet columns; ``missing_ok`` gives ``[]`` for a file that does not exist."""
    import pyarrow.parquet as pq

    fs, path = url_to_fs(url)
    if not fs.exists(path):
        if missing_ok:
            return []
        raise _fail(f"{url} does not exist", key, "fix the path")
    if path.endswith(".parquet"):
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh, columns=columns).to_pylist()
    return list(iter_jsonl(url, key=key))
