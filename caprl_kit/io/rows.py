"""Rows of a JSONL or Parquet file (any fsspec URL) as dicts: ``read_rows`` (a small file, whole) behind eval's caption
files and blind-caption candidates, the eval/demo reports' sample files and the trainers' validation rows;
``iter_jsonl`` (streamed) behind the JSONL manifest reader and ``caprl train pairs``; ``parse_jsonl_lines``, the
one JSON Lines parser behind both and eval's benchmark files. A line that is not a JSON object is one error naming
the file and line; ``key`` turns errors into a ``ConfigError`` on that config key."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.fs import url_to_fs


def _fail(message: str, key: str | None, hint: str) -> Exception:
    return ConfigError([ConfigIssue(key, message, hint)]) if key else CaprlError(f"{message}; {hint}")


#: the hint of every JSON Lines parse error
JSONL_HINT = "JSONL holds one JSON object per line"


def parse_jsonl_lines(lines: Iterable[str], where: str, *, key: str | None = None) -> Iterator[dict[str, Any]]:
    """The rows of JSON Lines text (blank lines skipped), one per line. A line that is not JSON, or JSON that is not
    an object, is one error naming ``where`` (the file, as the message should show it), the line and the column."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(
                f"{where} line {number} is not valid JSON ({exc.msg}, column {exc.colno})", key, JSONL_HINT
            ) from None
        if not isinstance(row, dict):
            raise _fail(f"{where} line {number} is not a JSON object ({type(row).__name__})", key, JSONL_HINT)
        yield row


def iter_jsonl(url: str, *, key: str | None = None, where: str | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a JSON Lines file, streamed (``parse_jsonl_lines``); text that is not UTF-8 is one error naming
    the file. ``where`` names the file in messages (default: ``url``)."""
    import fsspec

    try:
        with fsspec.open(url, "rt", encoding="utf-8") as fh:
            yield from parse_jsonl_lines(fh, where or url, key=key)
    except UnicodeDecodeError as exc:
        raise _fail(f"{where or url} is not UTF-8 text ({exc.reason})", key, "write JSON Lines in UTF-8") from None


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


def column_value(row: dict[str, Any], column: str) -> Any:
    """``row[column]``; a dotted name walks into nested columns (``reward_model.ground_truth``, CapRL-QA-75K's QA),
    also through JSON text."""
    value: Any = row
    for part in column.split("."):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return None
        value = value.get(part) if isinstance(value, dict) else None
    return value
