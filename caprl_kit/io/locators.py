"""Where an input item's embedded bytes are, so the worker that decodes the item reads them, never the driver.

A reader lists embedded media (WebDataset tar members, a Parquet bytes column, an HF dataset's ``Image`` column)
as a ``Locator``: a few numbers and a URL instead of the bytes. The driver's listing then never reads media bytes
(Parquet: only the key, path and carried columns are read; uncompressed tars: headers only, the data is skipped
with a seek), shards travel to workers as these small descriptions, and each worker reads its items' bytes when it
decodes them, inside the bounded decode window (``item_payload``). Compressed tars and JSONL/CSV rows keep their
bytes inline (``InputItem.data``): there is no cheap way back to one item in them.

Each kind reads with a small per-process cache (one open dataset, the last Parquet row groups), so a worker reading
its shard's consecutive rows reads each row group once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from caprl_kit.errors import MediaError
from caprl_kit.io.fs import url_to_fs
from caprl_kit.registry import Registry

LOCATORS = Registry("media locator")


@dataclass(frozen=True)
class Locator:
    """``kind``: a ``LOCATORS`` name. ``url``: the tar / Parquet file or the HF dataset folder. ``offset``: the tar
    member's data offset, else the row in the file / dataset. ``size``: bytes, where the listing knows it without
    reading them. ``column`` / ``field``: the column holding the bytes (``field``: inside a struct column, e.g.
    ``bytes`` of an HF ``Image``)."""

    kind: str
    url: str
    offset: int
    size: int | None = None
    column: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"byte {self.offset}" if self.kind == "tar" else f"row {self.offset}"
        return f"{self.url} ({where}{f', column {self.column}' if self.column else ''})"


def item_payload(item: Any, max_bytes: int, limits: Any = None) -> bytes | None:
    """The item's encoded bytes: inline, else read through its locator (None: the media is at ``item.source``).
    Raises ``MediaError`` (a status row) when the listing found the item unreadable (``item.problem``: an
    ``invalid_path``), when neither bytes nor a source exist or the bytes cannot be read. ``limits``: the
    timeouts of a read from an http(s) file (``io.urls.UrlLimits``)."""
    from caprl_kit.io.media import _check_size, _io_errors
    from caprl_kit.io.urls import call_cancellable, is_http

    if getattr(item, "problem", None):
        raise MediaError("invalid_path", item.source or item.key, item.problem)
    if item.data is not None or item.locator is None:
        return item.data
    loc: Locator = item.locator
    if loc.size is not None:
        _check_size(loc.size, max_bytes, str(loc))  # before reading; inline bytes get the same cap when decoded
    read = LOCATORS.get(loc.kind)
    with _io_errors(str(loc)):  # an http(s) file: bounded by the limits, in a wait Ctrl-C ends at once
        data = call_cancellable(lambda: read(loc, limits=limits)) if is_http(loc.url) else read(loc)
    if data is None and not item.source:
        raise MediaError("no_media", item.key, f"the row has no media bytes ({loc}) and no path")
    return data


def item_bytes(item: Any, max_bytes: int, limits: Any = None) -> bytes:
    """The item's encoded bytes wherever they are: inline, located, or at ``item.source``."""
    from caprl_kit.io.media import read_bytes

    data = item_payload(item, max_bytes, limits)
    return data if data is not None else read_bytes(item.source, max_bytes, limits)


@LOCATORS.register("tar")
def read_tar_member(loc: Locator, limits: Any = None) -> bytes:
    fs, path = url_to_fs(loc.url, limits)
    size = loc.size or 0
    data = fs.cat_file(path, start=loc.offset, end=loc.offset + size)  # one ranged read (no read-ahead block)
    if len(data) != size:
        raise MediaError(
            "file_not_found",
            str(loc),
            f"the tar ends after {len(data)} of the member's {loc.size} bytes; was it changed since the run began?",
        )
    return data


@functools.lru_cache(maxsize=8)
def _row_group_starts(url: str, limits: Any = None) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    fs, path = url_to_fs(url, limits)
    with fs.open(path, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    starts, n = [], 0
    for i in range(meta.num_row_groups):
        starts.append(n)
        n += meta.row_group(i).num_rows
    return (*starts, n)


@functools.lru_cache(maxsize=2)  # a worker reads its shard's rows in order: each row group is read once
def _row_group_column(url: str, group: int, column: str, limits: Any = None) -> Any:
    import pyarrow.parquet as pq

    fs, path = url_to_fs(url, limits)
    with fs.open(path, "rb") as fh:  # kept chunked: combining a binary column over 2 GiB would overflow
        return pq.ParquetFile(fh).read_row_group(group, columns=[column]).column(0)


def _value(array: Any, index: int, field: str | None) -> bytes | None:
    value = array[index].as_py()
    if field is not None:
        value = (value or {}).get(field) if isinstance(value, dict) or value is None else value
    if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):  # the listing checks the type
        raise MediaError(
            "failed_to_decode",
            f"row {index}",
            f"the cell holds {type(value).__name__}, not encoded bytes; point input.bytes_column at a binary column",
        )
    return bytes(value) if value is not None else None


@LOCATORS.register("parquet")
def read_parquet_cell(loc: Locator, limits: Any = None) -> bytes | None:
    import bisect

    starts = _row_group_starts(loc.url, limits)
    if not 0 <= loc.offset < starts[-1]:
        raise MediaError(
            "file_not_found", str(loc), f"the file has {starts[-1]} rows; was it changed since the run began?"
        )
    group = bisect.bisect_right(starts, loc.offset) - 1
    try:
        return _value(_row_group_column(loc.url, group, loc.column, limits), loc.offset - starts[group], loc.field)
    except (ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid / ArrowKeyError: a broken or changed file
        raise MediaError("file_not_found", str(loc), f"cannot read the cell: {exc}") from None


@functools.lru_cache(maxsize=4)
def open_hf_dataset(path: str) -> Any:
    """The dataset ``load_from_disk`` finds at ``path`` (memory-mapped; a DatasetDict's first split), as Arrow."""
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[next(iter(ds))]
    return ds.with_format("arrow")


@LOCATORS.register("hf_dataset")
def read_hf_cell(loc: Locator, limits: Any = None) -> bytes | None:  # a local folder: no URL reads
    ds = open_hf_dataset(loc.url)
    if not 0 <= loc.offset < len(ds):
        raise MediaError(
            "file_not_found", str(loc), f"the dataset has {len(ds)} rows; was it changed since the run began?"
        )
    return _value(ds[loc.offset].column(loc.column), 0, loc.field)
