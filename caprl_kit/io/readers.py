"""Streaming input readers: folders, JSONL/CSV/Parquet manifests, HF datasets saved to disk, WebDataset tars.

Every reader yields ``InputItem``s lazily in a deterministic order, so memory does not grow with the size of the
listing and shard ``i`` always holds the same items. Paths may be any fsspec URL.

- folder: a sorted, streaming walk (one directory listing in memory at a time), files filtered by extension;
  key = path relative to the root. Directory symlinks are followed, each directory (by device and inode) once, so
  a symlink loop ends the branch with a warning. Non-regular entries with a media suffix (FIFO, device, socket)
  are listed without being opened and become ``not_a_regular_file`` rows when read.
- jsonl / csv / parquet manifests: one file, or several given as a glob or a list (``input_files``: read one after
  the other as one input, row numbers running on); ``input.path_column`` (path or URL, relative paths resolved
  against the manifest's folder) or ``input.bytes_column``; ``input.key_column`` (default: the path, else the row number);
  ``input.carry_columns`` are copied into output rows. Read in record batches (pyarrow) / line by line. Parquet is
  read with only the key, path and carried columns: embedded bytes are located (file, row), not read.
- hf_dataset: ``datasets.load_from_disk`` (memory-mapped Arrow); an ``image`` column of {bytes, path} (bytes
  located by row) or a path (relative paths resolved against the dataset's folder, made absolute when listed).
- webdataset: ``*.tar`` shards (a glob or a list); members grouped by basename, the first media member is the item.
  Uncompressed tars are listed from their headers (the data is skipped, each item located by its byte range);
  compressed ones are streamed and carry their bytes inline.

Embedded media travel as ``Locator``s (``io/locators.py``): the worker that decodes an item reads its bytes.

Odd rows are rows: a path with a NUL byte or bytes that are not UTF-8 is listed with its ``problem`` (key and
source written printable, ``\\xNN``) and becomes an ``invalid_path`` row naming its manifest row; a binary path or
key column is decoded as UTF-8. Every key is checked against the keys listed before it (``input.duplicate_keys``).
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.io.config import InputConfig
from caprl_kit.io.fs import url_to_fs
from caprl_kit.io.locators import Locator
from caprl_kit.io.media import path_problem, printable
from caprl_kit.log import get_logger
from caprl_kit.registry import Registry

log = get_logger(__name__)

READERS = Registry("input format")
BATCH_ROWS = 4096


@dataclass
class InputItem:
    key: str
    source: str | None = None  # path or URL
    data: bytes | None = None  # embedded bytes, inline
    media_type: str = "image"
    extra: dict[str, Any] = field(default_factory=dict)
    locator: Locator | None = None  # embedded bytes, where the worker reads them (``locators.item_payload``)
    problem: str | None = None  # why the listing found it unreadable: an ``invalid_path`` row (``item_payload``)

    @property
    def size(self) -> int | None:
        """Bytes of embedded media where known without reading them (None for files: they are read later)."""
        return len(self.data) if self.data is not None else self.locator.size if self.locator else None


def media_type_of(name: str, cfg: InputConfig) -> str | None:
    ext = posixpath.splitext(name.lower())[1]
    if cfg.media_type != "auto":
        return cfg.media_type if ext in cfg.image_extensions + cfg.video_extensions or not ext else None
    if ext in cfg.image_extensions:
        return "image"
    if ext in cfg.video_extensions:
        return "video"
    return None


#: how a file's suffix names its format (``input.format: auto``)
SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".tar": "webdataset",
}
#: the formats a glob or a list of files may be read as: files, not folders
FILE_FORMATS = ("jsonl", "csv", "parquet", "webdataset")


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def paths_label(value: str | list[str]) -> str:
    """A path key's value as messages show it: the path or glob, or a list's first files and its length."""
    if isinstance(value, str):
        return value
    shown = ", ".join(value[:3])
    return f"[{shown}{f', ... ({len(value)} entries)' if len(value) > 3 else ''}]"


def input_label(cfg: InputConfig) -> str:
    """``input.path`` as messages show it (``paths_label``)."""
    return paths_label(cfg.path)


def _suffix_format(path: str) -> str | None:
    return SUFFIX_FORMATS.get(posixpath.splitext(path.lower().rstrip("/"))[1])


def expand_paths(value: str | list[str], key: str, example: str = "gen_qa_out/part_*.jsonl") -> list[str] | None:
    """The files a glob or a list of paths (the value of config key ``key``) names, in order: a glob's matches
    sorted, a list's entries as given (each may be a glob). None for one path without glob characters (a file, a
    folder or a dataset folder: its reader takes it). A glob that matches no file, a listed file that does not exist
    or is a folder, or a file named twice is a ``CaprlError`` naming the key (``key`` or ``key.N``)."""
    if isinstance(value, str) and not is_glob(value):
        return None
    entries = [value] if isinstance(value, str) else value
    files: list[str] = []
    for n, entry in enumerate(entries):
        where = key if isinstance(value, str) else f"{key}.{n}"
        fs, path = url_to_fs(entry)
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        url = (lambda p: p) if proto in ("file", "local") else fs.unstrip_protocol
        if is_glob(path):
            matched = sorted(fs.glob(path))
            found = [m for m in matched if not fs.isdir(m)]
            if not found:
                what = f"only folders ({', '.join(matched[:3])})" if matched else "no file"
                raise CaprlError(
                    f"{where}: the glob {entry} matches {what}; a glob names files (e.g. {key}={example}): check "
                    "the folder and the pattern"
                )
            files += [url(m) for m in found]
        elif not fs.exists(path):
            raise CaprlError(f"{where}: {entry} does not exist; fix the path")
        elif fs.isdir(path):
            raise CaprlError(
                f"{where}: {entry} is a folder; a list names files: give its files (e.g. {entry.rstrip('/')}/*"
                f"{posixpath.splitext(example)[1]}) or, where {key} takes a folder, the folder alone"
            )
        else:
            files.append(entry)
    twice = next((f for i, f in enumerate(files) if f in files[:i]), None)
    if twice is not None:
        raise CaprlError(f"{key} names {twice} twice; name each file once")
    return files


def input_files(cfg: InputConfig) -> list[str] | None:
    """The files a glob or a list in ``input.path`` names (``expand_paths``); None for one path without glob
    characters (a file, a folder or a dataset folder: its reader takes it)."""
    return expand_paths(cfg.path, "input.path")


def _files_format(cfg: InputConfig, files: list[str]) -> str:
    """The one format of the files a glob or a list names (every file's suffix, or ``input.format``)."""
    label = input_label(cfg)
    if cfg.format != "auto":
        if cfg.format not in FILE_FORMATS:
            raise CaprlError(
                f"input.format={cfg.format} reads one folder, but input.path={label} names {len(files)} file(s); "
                f"a glob or a list is read as {', '.join(FILE_FORMATS)}: set input.format to one of them (or auto)"
            )
        return cfg.format
    formats = {f: _suffix_format(f) for f in files}
    media = [f for f in files if media_type_of(f, cfg.model_copy(update={"media_type": "auto"}))]
    if media:
        raise CaprlError(
            f"input.path={label} names media files ({', '.join(media[:2])}); a glob or a list names manifests "
            "(.jsonl/.csv/.parquet) or .tar shards: give the media's folder as input.path instead"
        )
    unknown = [f for f, fmt in formats.items() if fmt is None]
    if unknown:
        raise CaprlError(
            f"cannot tell the format of {unknown[0]} (input.path={label}): its suffix is none of "
            f"{', '.join(SUFFIX_FORMATS)}; set input.format"
        )
    kinds = dict.fromkeys(formats.values())
    if len(kinds) > 1:
        examples = ", ".join(f"{next(f for f in files if formats[f] == k)} ({k})" for k in kinds)
        raise CaprlError(
            f"input.path={label} mixes formats: {examples}; a glob or a list reads files of one format: narrow it"
        )
    return str(next(iter(kinds)))


def detect_format(cfg: InputConfig) -> str:
    files = input_files(cfg)
    if files is not None:
        return _files_format(cfg, files)
    assert isinstance(cfg.path, str)  # a list is files (input_files)
    fs, root = url_to_fs(cfg.path)
    if not fs.exists(root):
        raise CaprlError(f"input.path does not exist: {cfg.path}")
    if cfg.format in ("jsonl", "csv") and fs.isdir(root):
        raise CaprlError(
            f"input.path {cfg.path} is a folder, and input.format={cfg.format} reads files: give them as "
            f"input.path={cfg.path.rstrip('/')}/*.{cfg.format} (a glob) or a list of files"
        )
    if cfg.format != "auto":
        return cfg.format
    if (fmt := _suffix_format(cfg.path)) is not None:
        return fmt
    if fs.isdir(root) and (fs.exists(f"{root}/dataset_info.json") or fs.exists(f"{root}/dataset_dict.json")):
        return "hf_dataset"
    if fs.isdir(root):
        return "folder"
    raise CaprlError(f"cannot tell the format of input.path={cfg.path}; set input.format")


def _one_path(cfg: InputConfig, fmt: str) -> str:
    """``input.path`` for a reader that takes one path (a folder, an HF dataset folder)."""
    if not isinstance(cfg.path, str) or is_glob(cfg.path):
        raise CaprlError(
            f"input.format={fmt} reads one folder, but input.path={input_label(cfg)} names files (a glob or a "
            "list); give the folder"
        )
    return cfg.path


def iter_items(cfg: InputConfig) -> Iterator[InputItem]:
    """All items of the input, streamed in deterministic order (``input.limit`` applied), each key once
    (``input.duplicate_keys``)."""
    reader = READERS.get(detect_format(cfg))
    for i, item in enumerate(unique_keys(reader(cfg), cfg)):
        if cfg.limit is not None and i >= cfg.limit:
            return
        yield item


DUPLICATES_SHOWN = 5
_warned: set[tuple[str, str, int]] = set()


def unique_keys(items: Iterator[InputItem], cfg: InputConfig) -> Iterator[InputItem]:
    """``items`` with ``input.duplicate_keys`` applied to a key seen before. Keys name the output rows and what a
    resume skips: two items with one key would collide in the output. ``error`` lists on (without yielding) to
    name up to five repeated keys, within ``input.limit``, then raises before the run writes anything (the
    fingerprint pass lists the input first). Memory: every key, once (see the field's description)."""
    seen: set[str] = set()
    last_suffix: dict[str, int] = {}  # keys renamed so far -> their highest suffix (``suffix``)
    repeats: list[tuple[int, str]] = []  # (item number, key)
    skipped = 0
    for n, item in enumerate(items):
        if cfg.limit is not None and n - skipped >= cfg.limit:
            break
        if item.key in seen:
            if cfg.duplicate_keys == "keep_first":
                skipped += 1
                if len(repeats) < DUPLICATES_SHOWN:
                    repeats.append((n, item.key))
                continue
            if cfg.duplicate_keys == "suffix":
                k = last_suffix.get(item.key, 1) + 1
                while f"{item.key}#{k}" in seen:
                    k += 1
                last_suffix[item.key] = k
                item.key = f"{item.key}#{k}"
            else:
                repeats.append((n, item.key))
                if len(repeats) >= DUPLICATES_SHOWN:
                    break
                continue
        seen.add(item.key)
        if not repeats or cfg.duplicate_keys != "error":
            yield item
    shown = ", ".join(f"{key!r} (item {n})" for n, key in repeats[:DUPLICATES_SHOWN])
    if repeats and cfg.duplicate_keys == "error":
        raise CaprlError(
            f"input {input_label(cfg)}: item keys repeat, and keys must be unique (they name the output rows and what a "
            f"resume skips); {'the first repeats' if len(repeats) > 1 else 'the repeat'}: {shown}. Fix: make the "
            f"keys unique{f' (input.key_column={cfg.key_column})' if cfg.key_column else ''}, or set "
            "input.duplicate_keys=keep_first (skip the repeats) or input.duplicate_keys=suffix (rename them "
            "KEY#2, KEY#3, ...)"
        )
    if skipped and (mark := (input_label(cfg), shown, skipped)) not in _warned:  # once, not once per listing pass
        _warned.add(mark)
        log.warning(
            "input %s: %d item(s) skipped whose key was listed before (input.duplicate_keys=keep_first): %s%s",
            input_label(cfg),
            skipped,
            shown,
            ", ..." if skipped > DUPLICATES_SHOWN else "",
        )


# --------------------------------------------------------------------------- readers


@READERS.register("folder")
def read_folder(cfg: InputConfig) -> Iterator[InputItem]:
    fs, root = url_to_fs(_one_path(cfg, "folder"))
    root = root.rstrip("/")
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    prefix = "" if proto in ("file", "local") else f"{proto}://"

    local = proto in ("file", "local")
    seen: set[object] = set()  # every directory entered, by (st_dev, st_ino) where the filesystem has them

    def dir_key(e: dict[str, Any]) -> object | None:
        """Identity of the directory ``e`` is or links to, else None. Only ``stat`` (never ``open``)."""
        name = e["name"].rstrip("/")
        if not local:
            return name if e["type"] == "directory" else None
        if e["type"] != "directory" and not e.get("islink"):
            return None  # a file, FIFO, device or socket: nothing to follow
        try:
            st = os.stat(name)  # follows the symlink
        except OSError:
            return None  # a broken link: listed, it becomes a file_not_found row if it has a media suffix
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def walk(directory: str, ancestors: tuple[object, ...]) -> Iterator[InputItem]:
        entries = sorted(fs.ls(directory, detail=True), key=lambda e: e["name"])
        for e in entries:
            name = e["name"].rstrip("/")
            key = dir_key(e)
            if key is not None:
                if key in seen:
                    why = "a symlink loop" if key in ancestors else "a directory already listed"
                    log.warning(
                        "input folder: not following %s: it leads to %s (%s)",
                        name,
                        why,
                        os.path.realpath(name) if local else name,
                    )
                    continue
                seen.add(key)
                yield from walk(name, (*ancestors, key))
            elif (mt := media_type_of(name, cfg)) is not None:
                rel = name[len(root) + 1 :] if name.startswith(root + "/") else posixpath.basename(name)
                problem = path_problem(name)  # a file name that is not UTF-8: its row could not be written
                yield InputItem(
                    key=printable(rel),
                    source=prefix + (printable(name) if problem else name),
                    media_type=mt,
                    problem=problem and f"in input folder {cfg.path}: {problem}",
                )

    if not fs.isdir(root):
        raise CaprlError(f"input.path is not a folder: {cfg.path}")
    top = dir_key({"name": root, "type": "directory"})
    seen.add(top)
    yield from walk(root, (top,))


def _resolve(base_dir: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return posixpath.join(base_dir, path)


_LOCATOR = "\0locator"  # a row's key for the locator of its embedded bytes (set by the readers that locate)
_ORIGIN = "\0origin"  # a row's key for (its manifest, its folder, its row number there) when there are several


def _each_manifest(files: list[str], rows_of: Any) -> Iterator[dict[str, Any]]:
    """The rows of several manifests, one file after the other, each row marked with its origin (``_ORIGIN``):
    relative paths resolve against their own manifest's folder and messages name the file and its row."""
    for f in files:
        base = _absolute(posixpath.dirname(f.rstrip("/")))
        for n, row in enumerate(rows_of(f)):
            row[_ORIGIN] = (f, base, n)
            yield row


def _rows_to_items(rows: Iterator[dict[str, Any]], cfg: InputConfig, base_dir: str) -> Iterator[InputItem]:
    root = _absolute(cfg.media_root) if cfg.media_root else None
    for i, row in enumerate(rows):  # i runs on over several manifests: the ``row_N`` keys stay unique
        locator = row.pop(_LOCATOR, None)
        manifest, base, n = row.pop(_ORIGIN, (None, base_dir, i))
        base = root or base
        where = f"manifest {manifest} row {n}" if manifest else f"manifest row {i}"
        data = row.get(cfg.bytes_column) if cfg.bytes_column and locator is None else None
        path = row.get(cfg.path_column)
        if isinstance(path, (list, tuple)):  # e.g. CapRL-Video-QA-20K's videos: [one relative path]
            path = path[0] if path else None
        if isinstance(path, dict):  # HF Image layout {bytes, path}
            data = data or path.get("bytes")
            path = path.get("path")
        path = _text(path)  # a binary path column: UTF-8 (bytes that are not: an invalid_path row)
        if data is None and not path and locator is None:
            raise CaprlError(
                f"{where} has neither '{cfg.path_column}' nor bytes; set input.path_column"
                f"{' / input.bytes_column' if not cfg.bytes_column else ''}"
            )
        source = _resolve(base, str(path)) if path else None
        key = _text(row.get(cfg.key_column)) if cfg.key_column else (str(path) if path else f"row_{i:08d}")
        missing = [c for c in cfg.carry_columns if c not in row]
        if missing:
            raise CaprlError(f"{where} lacks carry_columns {missing}")
        media = cfg.media_type if cfg.media_type != "auto" else (media_type_of(str(path), cfg) if path else None)
        problem = path_problem(source) if source else None
        if problem:  # an invalid_path row where the path is what would be read; else only a label, made printable
            source = printable(source)  # type: ignore[arg-type]  # printable takes the bytes or str a listing yields
            problem = f"{where} ({cfg.path_column}): {problem}" if data is None and locator is None else None
        yield InputItem(
            key=printable(str(key)),
            source=source,
            data=bytes(data) if data is not None else None,
            media_type=media or "image",
            extra={
                **{c: row[c] for c in cfg.carry_columns},
                **{c: row[c] for c in cfg.carry_if_present if row.get(c) is not None},
            },
            locator=locator,
            problem=problem,
        )


def _text(value: Any) -> Any:
    """A path or key cell as text: bytes (a binary Parquet column) decoded as UTF-8, bytes that are not UTF-8 kept
    as surrogate escapes (so ``path_problem`` reports them); anything else as it is."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return value


def _manifest_dir(path: str) -> str:
    return _absolute(posixpath.dirname(path.rstrip("/")))


def _manifest_rows(cfg: InputConfig, rows_of: Any) -> Iterator[InputItem]:
    """The items of the manifest(s) ``input.path`` names, each file's rows read by ``rows_of(url)``."""
    files = input_files(cfg)
    if files is None:
        assert isinstance(cfg.path, str)  # a list is files (input_files)
        yield from _rows_to_items(rows_of(cfg.path), cfg, _manifest_dir(cfg.path))
    else:
        yield from _rows_to_items(_each_manifest(files, rows_of), cfg, _manifest_dir(files[0]))


def _absolute(path: str) -> str:
    """Local paths become absolute, so the sources a run records stay valid from any working directory."""
    return path if "://" in path else os.path.abspath(path or ".")


@READERS.register("jsonl")
def read_jsonl(cfg: InputConfig) -> Iterator[InputItem]:
    from caprl_kit.io.rows import iter_jsonl

    yield from _manifest_rows(cfg, iter_jsonl)


def _batches_to_rows(batches: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        yield from batch.to_pylist()


@READERS.register("parquet")
def read_parquet(cfg: InputConfig) -> Iterator[InputItem]:
    """Reads the key, path and carried columns only; embedded bytes (``input.bytes_column``, or the ``bytes`` of an
    HF ``Image`` struct in the path column) are located by (file, row) for the worker to read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def rows(manifest: str) -> Iterator[dict[str, Any]]:
        fs, f = url_to_fs(manifest)
        url = fs.unstrip_protocol(f)
        with fs.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
            names = set(schema.names)
            if cfg.bytes_column and cfg.bytes_column not in names:
                raise CaprlError(
                    f"{url} has no column '{cfg.bytes_column}' (input.bytes_column); it has {sorted(names)}"
                )
            field = (
                bytes_field(url, cfg.bytes_column, schema.field(cfg.bytes_column).type) if cfg.bytes_column else None
            )
            path_col = cfg.path_column
            if field == "bytes" and path_col not in names:  # an image struct as bytes_column: its path names it
                path_col = str(cfg.bytes_column)
            struct = (
                path_col in names
                and pa.types.is_struct(schema.field(path_col).type)
                and schema.field(path_col).type.get_field_index("bytes") >= 0
            )
            wanted = [cfg.key_column, *cfg.carry_columns, *cfg.carry_if_present] + ([] if struct else [path_col])
            columns = [c for c in dict.fromkeys(wanted) if c and c in names]
            if struct and schema.field(path_col).type.get_field_index("path") >= 0:
                columns.append(f"{path_col}.path")  # the struct with its path only: no bytes read
            where = (cfg.bytes_column, field) if cfg.bytes_column else (path_col, "bytes") if struct else None
            moved = path_col != cfg.path_column and path_col not in (cfg.key_column, *cfg.carry_columns)
            if columns:
                listed = (row for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns) for row in b.to_pylist())
            else:  # only the bytes column: nothing to read here
                listed = ({} for _ in range(pf.metadata.num_rows))
            for n, row in enumerate(listed):
                if where:
                    row[_LOCATOR] = Locator("parquet", url, n, column=where[0], field=where[1])
                if moved:
                    row[cfg.path_column] = row.pop(path_col, None)
                yield row

    files = input_files(cfg)
    if files is not None:  # a glob or a list: relative paths resolve against each file's folder
        yield from _rows_to_items(_each_manifest(files, rows), cfg, _manifest_dir(files[0]))
        return
    assert isinstance(cfg.path, str)  # a list is files (input_files)
    fs, path = url_to_fs(cfg.path)
    if fs.isdir(path):  # a dataset folder (the Hub's layout): every Parquet file under it, against the folder
        found = [fs.unstrip_protocol(f) for f in sorted(fs.glob(f"{path.rstrip('/')}/**/*.parquet"))]
        listed = (row for f in found for row in rows(f))
        yield from _rows_to_items(listed, cfg, _absolute(cfg.path.rstrip("/")))
    else:
        yield from _rows_to_items(rows(cfg.path), cfg, _manifest_dir(cfg.path))


def _binary(typ: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ)


def bytes_field(where: str, column: str, typ: Any) -> str | None:
    """How ``input.bytes_column`` holds the media, from its Arrow type: None for encoded bytes (binary), ``"bytes"``
    for an image struct ``{bytes, path}`` (the CapRL-QA-75K / HF ``Image`` layout); any other type is refused
    here, at the start, naming the column and its type (rather than failing every shard)."""
    import pyarrow as pa

    if _binary(typ):
        return None
    if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0 and _binary(typ.field("bytes").type):
        return "bytes"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        hint = "; a column of paths or URLs is input.path_column"
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        hint = "; a list per row does not say which entry is the media: write one value per row"
    elif pa.types.is_struct(typ):
        hint = "; a struct without binary `bytes` holds no media bytes: set input.path_column to it if it holds paths"
    else:
        hint = ""
    raise CaprlError(
        f"{where}: input.bytes_column '{column}' has Arrow type {typ}, not encoded media bytes (binary) "
        f"nor an image struct {{bytes: binary, path: string}}{hint}"
    )


@READERS.register("csv")
def read_csv(cfg: InputConfig) -> Iterator[InputItem]:
    import fsspec
    import pyarrow.csv as pacsv

    def rows(manifest: str) -> Iterator[dict[str, Any]]:
        with fsspec.open(manifest, "rb") as fh:
            reader = pacsv.open_csv(fh, read_options=pacsv.ReadOptions(block_size=1 << 20))
            yield from _batches_to_rows(reader)

    yield from _manifest_rows(cfg, rows)


@READERS.register("hf_dataset")
def read_hf_dataset(cfg: InputConfig) -> Iterator[InputItem]:
    """Rows as Arrow batches of the memory-mapped dataset. Embedded bytes (``input.bytes_column``, or the ``bytes`` of
    an ``Image`` column) are located by row, their sizes taken from the Arrow offsets: the driver never copies them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from caprl_kit.io.locators import open_hf_dataset

    url = _absolute(
        _one_path(cfg, "hf_dataset")
    )  # resolved once, here: the workers open it (and its images) from any working directory
    ds = open_hf_dataset(url)
    column = cfg.path_column if cfg.path_column in ds.column_names else "image"
    local = cfg.model_copy(update={"path_column": column})
    typ = ds.data.schema.field(column).type if column in ds.column_names else None  # also for a plain dict feature
    struct = (
        typ is not None
        and pa.types.is_struct(typ)
        and typ.get_field_index("bytes") >= 0
        and not pa.types.is_null(typ.field("bytes").type)
    )  # {bytes: None, path} everywhere: paths only
    has_path = typ is not None and struct and typ.get_field_index("path") >= 0
    if cfg.bytes_column and cfg.bytes_column not in ds.column_names:
        raise CaprlError(f"{url} has no column '{cfg.bytes_column}' (input.bytes_column); it has {ds.column_names}")
    where = (
        (cfg.bytes_column, bytes_field(url, cfg.bytes_column, ds.data.schema.field(cfg.bytes_column).type))
        if cfg.bytes_column
        else (column, "bytes")
        if struct
        else None
    )
    plain = [
        c
        for c in dict.fromkeys([cfg.key_column, *cfg.carry_columns, *cfg.carry_if_present, column])
        if c and c in ds.column_names and c != (where and where[0])
    ]

    def rows() -> Iterator[dict[str, Any]]:
        n = 0
        for batch in ds.iter(batch_size=256):
            out = batch.select(plain).to_pylist() if plain else [{} for _ in range(batch.num_rows)]
            if where:
                blobs = batch.column(where[0])
                if where[1] == "bytes":  # an image struct: its bytes (and, as the path column, its path)
                    if where[0] == column and has_path:
                        for row, p in zip(out, pc.struct_field(blobs, "path").to_pylist()):
                            row[column] = p
                    blobs = pc.struct_field(blobs, "bytes")
                for row, size in zip(out, pc.binary_length(blobs).to_pylist()):  # null: no bytes in that row
                    row[_LOCATOR] = Locator("hf_dataset", url, n, size=size, column=where[0], field=where[1])
                    n += 1
            else:
                n += len(out)
            yield from out

    yield from _rows_to_items(rows(), local, url)  # relative image paths: against the absolute dataset folder


@READERS.register("webdataset")
def read_webdataset(cfg: InputConfig) -> Iterator[InputItem]:
    for shard_url in input_files(cfg) or [str(cfg.path)]:
        fs, shard = url_to_fs(shard_url)
        with fs.open(shard, "rb") as fh:
            try:  # an uncompressed tar: headers only, each item located by its byte range
                tar = tarfile.open(fileobj=fh, mode="r:")  # noqa: SIM115 - closed by `with tar:` below
                url = fs.unstrip_protocol(shard)
            except tarfile.ReadError:  # compressed: streamed, the bytes inline
                fh.seek(0)
                tar, url = tarfile.open(fileobj=fh, mode="r|*"), None  # noqa: SIM115 - closed by `with tar:`
            with tar:
                yield from _tar_items(tar, url, posixpath.basename(shard), cfg)


def _tar_items(tar: tarfile.TarFile, url: str | None, name: str, cfg: InputConfig) -> Iterator[InputItem]:
    """Members grouped by basename; the first media member of a group is the item."""
    current: str | None = None
    found: InputItem | None = None
    for member in tar:
        if not member.isfile():
            continue
        stem, _ = posixpath.splitext(member.name)
        if stem != current:
            if found is not None:
                yield found
            current, found = stem, None
        mt = media_type_of(member.name, cfg)
        if found is None and mt is not None:
            key = printable(f"{name}/{stem}")  # a member name that is not UTF-8 (tarfile's surrogate escapes)
            if url is None:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]  # a regular file member: extractfile returns its stream
                found = InputItem(key=key, data=data, media_type=mt)
            else:
                found = InputItem(
                    key=key, media_type=mt, locator=Locator("tar", url, member.offset_data, size=member.size)
                )
        # the listing keeps no member list: memory stays flat however many members a tar has
        tar.members = []  # type: ignore[attr-defined]  # TarFile.members: CPython's undocumented member list
    if found is not None:
        yield found
