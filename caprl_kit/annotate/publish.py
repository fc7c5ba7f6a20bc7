"""``caprl annotate publish RUN_DIR OUT_DIR``: an annotate run as a Hub-ready dataset folder.

``OUT_DIR/data/train-NNNNN-of-MMMMM.parquet`` plus a dataset card ``OUT_DIR/README.md``, the layout
``datasets.load_dataset(OUT_DIR)`` (the parquet builder) and the Hugging Face Hub viewer read. The run's shards are
read streaming, batch by batch, and cut into row groups by bytes (``row_group_bytes``, default 200 MB of
uncompressed data: the viewer refuses a row group over 300 MB and recommends 100-300 MB), never one per shard; a
data file is closed once it holds ``file_bytes``. Only a row larger than the target makes a larger group (alone).

Columns: ``key``, the media as a ``datasets`` ``Image``/``Video`` feature when it is embedded (the run's own
``media_bytes``, or the source files read now with ``embed_media``), ``caption``, ``captions`` (all n), the per-item
record (source, sizes, tokens, finish reasons, hygiene flags, content hash); with ``include_failed`` also the failed
rows with ``status`` / ``error_message``. What is the same for every row (captioner, prompt, sampling) is in the card,
with the run's counts, status counts and caption monitor rates (``annotate.pipeline.status``).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import status
from caprl_kit.config import validate
from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import atomic_write_text, commit, join, tmp_name, url_to_fs
from caprl_kit.io.lock import output_lock_scope
from caprl_kit.io.parquet import SCHEMA_KEY
from caprl_kit.io.rundir import RESOLVED, RunDir, is_caprl_run, kit_version, prepare_output, run_command
from caprl_kit.log import get_logger
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.layout import DATASET_CARD, PUBLISH_DATA, PUBLISH_DATA_GLOB

log = get_logger(__name__)

COMMAND = "annotate publish"
#: the Hub viewer refuses to read a row group whose uncompressed size is over this ("max=286.10 MiB")
VIEWER_MAX_ROW_GROUP = 300_000_000
DEFAULT_ROW_GROUP_BYTES = 200_000_000
DEFAULT_FILE_BYTES = 1_000_000_000
PAGE_BYTES = 1 << 20
CHUNK_OVERHEAD = 64  # bytes a Parquet column chunk adds to its values, about (kept free in every row group)
#: the same for every row of a run: stated once in the card, not published per row
RUN_CONSTANT = ("model", "prompt_id", "prompt", "sampling", "latency_s")
#: the storage of a ``datasets`` Image / Video feature
MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str | int) -> int:
    """``200MB`` -> 200000000, ``64KiB`` -> 65536, ``1000`` -> 1000 (bytes)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in UNITS:
        raise CaprlError(f"'{text}' is not a size: write bytes, or a number with KB, MB, GB, KiB, MiB or GiB")
    return int(float(m.group(1)) * UNITS[unit])


@dataclass
class PublishOptions:
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES  # target uncompressed bytes per row group
    file_bytes: int = DEFAULT_FILE_BYTES  # a data file is closed once it holds this much
    embed_media: bool | None = None  # None: embed when the run stored its media (output.embed_media)
    include_failed: bool = False  # publish the failed rows too (with status, error_message)
    partial: bool = False  # publish a run whose shards are not all finished
    overwrite: bool = False  # replace an earlier publish in OUT_DIR
    name: str | None = None  # the card's title (default: the run folder's name)
    repo_id: str | None = None  # the Hub repository the card's example loads (default: OWNER/NAME)


@dataclass
class RowGroup:
    file: str
    rows: int
    bytes: int  # uncompressed (the size the viewer checks)
    compressed: int


@dataclass
class Published:
    output: str
    rows: int
    media: str  # embedded from the run | read from the sources | not embedded
    files: list[str] = field(default_factory=list)
    row_groups: list[RowGroup] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # statuses not published
    json_columns: list[str] = field(default_factory=list)  # published as JSON text (no datasets feature)
    seconds: float = 0.0


@dataclass
class Survey:
    """One cheap pass over the run (small columns and the footers): what to publish and how."""

    kinds: Counter[str] = field(default_factory=Counter)  # published rows per media type
    left_out: Counter[str] = field(default_factory=Counter)
    prompts: dict[str, str] = field(default_factory=dict)  # media type -> prompt text
    models: set[str] = field(default_factory=set)
    stored_media: bool = False  # some row holds media_bytes
    carried: dict[str, pa.DataType] = field(default_factory=dict)  # the input's columns (input.carry_columns)
    shards: list[tuple[str, int, int]] = field(default_factory=list)  # (url, rows, uncompressed bytes)

    @property
    def rows(self) -> int:
        return sum(self.kinds.values())


def publish(run_dir: str, out_dir: str, options: PublishOptions | None = None) -> Published:
    """Write ``out_dir`` from the annotate run in ``run_dir`` (see the module doc). Refuses, before writing
    anything: a folder that is not an annotate run, an unfinished run (unless ``partial``), an ``out_dir`` holding
    anything but an earlier publish (and that one unless ``overwrite``)."""
    opts = options or PublishOptions()
    t0 = time.perf_counter()
    if opts.row_group_bytes < 1 or opts.file_bytes < 1:
        raise CaprlError("row group and file sizes must be at least 1 byte")
    if opts.row_group_bytes > VIEWER_MAX_ROW_GROUP:
        log.warning(
            "row groups of %d bytes are over the %d the Hub viewer reads: the viewer will not show the dataset",
            opts.row_group_bytes,
            VIEWER_MAX_ROW_GROUP,
        )
    run, cfg, info = _read_run(run_dir, opts)
    survey = _survey(run, opts.include_failed)
    if not survey.rows:
        raise CaprlError(
            f"{run_dir} holds no captioned item to publish ({dict(survey.left_out) or 'no rows'}); "
            "pass --include-failed to publish the failed rows"
        )
    embed = survey.stored_media if opts.embed_media is None else opts.embed_media
    media = "not embedded" if not embed else "embedded from the run" if survey.stored_media else "read from the sources"
    layout = _layout(cfg, survey, embed, opts.include_failed)
    fs, base = url_to_fs(out_dir)
    _refuse_earlier(fs, base, out_dir, opts.overwrite)
    with output_lock_scope():
        prepare_output(out_dir, COMMAND, overwrite=opts.overwrite, same_command=True, option="OUT_DIR")
        reader = _Reader(survey, layout, embed and not survey.stored_media, opts)
        files = _write(fs, base, out_dir, reader.batches(), layout.schema, opts)
        result = Published(
            out_dir, 0, media, files, left_out=dict(survey.left_out), json_columns=sorted(layout.as_json)
        )
        for url in files:
            _, path = url_to_fs(url)
            with fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                result.row_groups.append(RowGroup(url, rg.num_rows, rg.total_byte_size, _compressed(rg)))
        result.rows = sum(g.rows for g in result.row_groups)
        card = render_card(run_dir, cfg, info, survey, layout.features, result, opts)
        atomic_write_text(fs, join(base, DATASET_CARD), card)
    result.seconds = time.perf_counter() - t0
    log.info("published %d rows in %d file(s), %d row group(s)", result.rows, len(files), len(result.row_groups))
    return result


# --------------------------------------------------------------------------- the run


def _read_run(run_dir: str, opts: PublishOptions) -> tuple[RunDir, AnnotateConfig, dict[str, Any]]:
    fs, path = url_to_fs(run_dir)
    if not fs.isdir(path):
        raise CaprlError(f"{run_dir} is not a folder; pass the OUTPUT folder of a caprl annotate run")
    run = RunDir(run_dir, AnnotationRow)
    manifest = run.manifest()
    if manifest is None or not manifest.artifact.startswith(f"{AnnotationRow.schema_name}/"):
        command = run_command(fs, path)
        what = f"it holds a caprl {command} run" if command else "no run_manifest.json"
        raise CaprlError(f"{run_dir} is not a caprl annotate run ({what}); pass the OUTPUT folder of caprl annotate")
    with fs.open(join(path, RESOLVED), "r") as fh:
        cfg = validate(AnnotateConfig, yaml.safe_load(fh.read()) or {}, source=join(run_dir, RESOLVED))
    info = status(run_dir)
    if info["shards_done"] < info["shards_total"] and not opts.partial:
        raise CaprlError(
            f"{run_dir} is not finished ({info['shards_done']} of {info['shards_total']} shards): resume it with "
            "caprl annotate, or pass --partial to publish the finished shards"
        )
    return run, cfg, info


def _survey(run: RunDir, include_failed: bool) -> Survey:
    s = Survey()
    for url in run.shard_urls():
        fs, path = url_to_fs(url)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            tag = (pf.schema_arrow.metadata or {}).get(SCHEMA_KEY, b"").decode()
            if not tag.startswith(f"{AnnotationRow.schema_name}/"):  # any version: a column it lacks is null
                raise CaprlError(f"{url} holds {tag or 'untagged data'}, not annotation rows")
            meta = pf.metadata
            t = pf.read(columns=["media_type", "status", "prompt", "model"])
            stored = _has_values(pf, "media_bytes")
            carried = [f for f in pf.schema_arrow if f.name not in AnnotationRow.model_fields]
        s.stored_media |= stored
        for f in carried:  # a column's type may differ between shards (written from each shard's values)
            try:
                s.carried[f.name] = _unify(s.carried.get(f.name, f.type), f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise CaprlError(
                    f"the carried column '{f.name}' is {s.carried[f.name]} in one shard and {f.type} in {url}: "
                    "they cannot be one column of the dataset"
                ) from None
        s.shards.append(
            (url, meta.num_rows, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))
        )
        for kind, st, prompt, model in zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True):
            if st == "ok" or include_failed:
                s.kinds[kind] += 1
                s.prompts.setdefault(kind, prompt)
                s.models.add(model)
            else:
                s.left_out[st] += 1
    return s


def _unify(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a) or pa.types.is_null(b):
        return b if pa.types.is_null(a) else a
    return pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive").field(0).type


def _has_values(pf: pq.ParquetFile, column: str) -> bool:
    """Whether ``column`` holds a non-null value (from the footer's statistics; the column is read without them)."""
    idx = pf.schema_arrow.get_field_index(column)
    meta = pf.metadata
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        stats = rg.column(idx).statistics
        if stats is None or not stats.has_null_count:
            return bool(pf.read_row_group(i, columns=[column]).column(0).null_count < rg.num_rows)
        if stats.null_count < rg.num_rows:
            return True
    return False


def _compressed(rg: Any) -> int:
    return int(sum(rg.column(i).total_compressed_size for i in range(rg.num_columns)))


# --------------------------------------------------------------------------- the table


@dataclass
class Layout:
    """The published table: its Arrow schema (with the ``huggingface`` features metadata) and ``datasets.Features``,
    the columns made from the media, those written as JSON text (a type ``datasets`` has no feature for, e.g. a
    map), and where each carried column comes from (dataset column -> shard column)."""

    schema: pa.Schema
    features: Any
    media: list[str]
    as_json: set[str]
    source_of: dict[str, str]


def _layout(cfg: AnnotateConfig, survey: Survey, embed: bool, include_failed: bool) -> Layout:
    import datasets

    own = AnnotationRow.arrow_schema()
    mixed = len([k for k, v in survey.kinds.items() if v]) > 1
    left_out = set(RUN_CONSTANT) | {"media_bytes"}  # the run's constants are in the card, the media in image/video
    left_out |= set() if cfg.output.clean else {"caption_clean"}
    left_out |= set() if mixed else {"media_type"}
    left_out |= set() if survey.kinds["video"] else {"n_frames", "frame_timestamps"}
    left_out |= set() if include_failed else {"status", "error_message"}
    media = [k for k in ("image", "video") if survey.kinds[k]] if embed else []
    names = ["key", *media, "caption", "captions"]
    names += [n for n in AnnotationRow.model_fields if n not in left_out and n not in names]  # new fields too
    fields = [pa.field(n, MEDIA if n in media else own.field(n).type) for n in names]
    source_of = {carried_name(n, names): n for n in survey.carried}
    fields += [pa.field(name, survey.carried[n]) for name, n in source_of.items()]
    as_json = {f.name for f in fields if not _has_feature(f)}
    fields = [pa.field(f.name, pa.string()) if f.name in as_json else f for f in fields]
    features = datasets.Features.from_arrow_schema(pa.schema(fields))
    for kind, feature in (("image", datasets.Image()), ("video", datasets.Video())):
        if kind in media:
            features[kind] = feature
    return Layout(features.arrow_schema, features, media, as_json, source_of)


def _has_feature(f: pa.Field) -> bool:
    """Whether ``datasets`` has a feature for the column's type (it has none for a map, e.g.)."""
    import datasets

    try:
        datasets.Features.from_arrow_schema(pa.schema([f]))
    except (ValueError, TypeError, NotImplementedError):
        return False
    return True


def carried_name(name: str, own: list[str]) -> str:
    """A carried input column's name in the dataset: its own, or ``input_<name>`` where a published column has it
    (a manifest's ``image`` path column beside the embedded ``image``)."""
    return f"input_{name}" if name in own else name


class _Reader:
    """The run's rows as published record batches, read streaming (a few thousand rows, or a few MB, at a time)."""

    def __init__(self, survey: Survey, layout: Layout, from_sources: bool, opts: PublishOptions):
        self.survey, self.layout, self.schema, self.from_sources, self.opts = (
            survey,
            layout,
            layout.schema,
            from_sources,
            opts,
        )
        own = [n for n in self.schema.names if n in AnnotationRow.model_fields and n not in layout.source_of]
        needed = ["key", "media_type", "status", "source"] + (
            ["media_bytes"] if layout.media and not from_sources else []
        )
        self.read_columns = own + [n for n in needed if n not in own] + list(survey.carried)
        self.row_bytes: float | None = None  # published bytes per row seen so far

    def batches(self) -> Iterator[pa.RecordBatch]:
        step = max(1, self.opts.row_group_bytes // 16)  # a batch is ~1/16 of a row group: cuts land close
        for url, rows, nbytes in self.survey.shards:
            per_row = self.row_bytes or ((nbytes / rows if rows else 1) * (8 if self.from_sources else 1))
            size = int(min(8192, max(1, step // max(per_row, 1))))
            fs, path = url_to_fs(url)
            with fs.open(path, "rb") as fh:
                pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 22)
                here = set(pf.schema_arrow.names)
                columns = [c for c in self.read_columns if c in here]
                for raw in pf.iter_batches(batch_size=size, columns=columns):
                    batch = self._publish(raw)
                    if batch.num_rows:
                        seen = batch.nbytes / batch.num_rows
                        self.row_bytes = seen if self.row_bytes is None else 0.8 * self.row_bytes + 0.2 * seen
                        yield batch

    def _publish(self, raw: pa.RecordBatch) -> pa.RecordBatch:
        if not self.opts.include_failed:
            raw = raw.filter(pc.equal(raw.column("status"), "ok"))
        columns = []
        for f in self.schema:
            name = self.layout.source_of.get(f.name, f.name)
            if f.name in self.layout.media:
                columns.append(self._media(raw, f.name))
            elif name in raw.schema.names and f.name in self.layout.as_json:
                values = raw.column(name).to_pylist(maps_as_pydicts="lossy")
                columns.append(pa.array([None if v is None else json.dumps(v) for v in values], pa.string()))
            elif name in raw.schema.names:
                columns.append(raw.column(name).cast(f.type))
            else:  # a carried column this shard's items did not have, a column its schema version did not
                columns.append(pa.nulls(raw.num_rows, f.type))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _media(self, raw: pa.RecordBatch, kind: str) -> pa.Array:
        """The ``Image``/``Video`` struct {bytes, path}: null for a row of the other kind or without media."""
        sources = raw.column("source").to_pylist()
        keys = raw.column("key").to_pylist()
        mine = pc.equal(raw.column("media_type"), kind)
        if self.from_sources:
            ok = pc.and_(mine, pc.equal(raw.column("status"), "ok")).to_pylist()
            data = pa.array(
                [self._read_source(s) if o and s else None for s, o in zip(sources, ok, strict=True)], pa.binary()
            )
        else:  # the run's bytes are taken in Arrow (no Python copy of each file); other rows null, no bytes kept
            stored = raw.column("media_bytes")
            wanted = pc.and_(mine, pc.is_valid(stored)).to_pylist()
            data = stored.take(pa.array([i if w else None for i, w in enumerate(wanted)], pa.int64()))
        has = pc.is_valid(data)
        names = [
            posixpath.basename(s or k) if h else None for s, k, h in zip(sources, keys, has.to_pylist(), strict=True)
        ]
        return pa.StructArray.from_arrays([data, pa.array(names, pa.string())], fields=list(MEDIA), mask=pc.invert(has))

    @staticmethod
    def _read_source(source: str) -> bytes:
        fs, path = url_to_fs(source)
        try:
            with fs.open(path, "rb") as fh:
                return bytes(fh.read())
        except (FileNotFoundError, OSError) as exc:
            raise CaprlError(
                f"cannot read {source} to embed it ({exc}); publish without --embed-media, or restore the file"
            ) from None


# --------------------------------------------------------------------------- the files


def _write(
    fs: Any, base: str, out_dir: str, batches: Iterator[pa.RecordBatch], schema: pa.Schema, opts: PublishOptions
) -> list[str]:
    """Cut ``batches`` into row groups of at most ``row_group_bytes`` (a row larger than that alone in its own) and
    files of about ``file_bytes``; the files are written under temp names and renamed ``train-i-of-n`` at the end."""
    import numpy as np

    # a column chunk's own bytes (page headers, dictionary page, levels) come on top of its values
    target = max(1, opts.row_group_bytes - CHUNK_OVERHEAD * sum(_leaves(f.type) for f in schema))
    temps: list[str] = []
    writer: pq.ParquetWriter | None = None
    sink: Any = None
    file_bytes = 0
    buffer: list[pa.RecordBatch] = []
    buffered = 0.0

    def flush() -> None:
        nonlocal writer, sink, file_bytes, buffered
        if not buffer:
            return
        if writer is None:
            temps.append(tmp_name(join(base, PUBLISH_DATA.format(index=len(temps), count=0))))
            fs.makedirs(temps[-1].rpartition("/")[0], exist_ok=True)
            sink = fs.open(temps[-1], "wb")
            writer = pq.ParquetWriter(sink, schema, **_writer_options(buffered / sum(b.num_rows for b in buffer)))
        table = pa.Table.from_batches(buffer, schema)
        writer.write_table(table, row_group_size=table.num_rows)  # the whole buffer: one row group
        file_bytes += int(buffered)
        buffer.clear()
        buffered = 0.0
        if file_bytes >= opts.file_bytes:
            writer.close()
            sink.close()
            writer, file_bytes = None, 0

    try:
        for batch in batches:
            sizes = _row_sizes(batch)
            start = 0
            while start < batch.num_rows:
                cum = np.cumsum(sizes[start:])
                take = int(np.searchsorted(cum, target - buffered, side="right"))
                if take == 0 and not buffer:
                    take = 1  # one row over the target: a group of its own
                if take:
                    buffer.append(batch.slice(start, take))
                    buffered += float(cum[take - 1])
                    start += take
                if start < batch.num_rows:  # the next row does not fit
                    flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
            sink.close()
    finals = []
    for i, tmp in enumerate(temps):
        final = join(base, PUBLISH_DATA.format(index=i, count=len(temps)))
        commit(fs, tmp, final)
        finals.append(join(out_dir, PUBLISH_DATA.format(index=i, count=len(temps))))
    return finals


def _leaves(t: pa.DataType) -> int:
    """The Parquet leaf columns of an Arrow type."""
    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _leaves(t.value_type)
    return 1


def _row_sizes(batch: pa.RecordBatch) -> Any:
    """Each row's share of the batch's bytes: its media bytes, plus the rest of the batch spread evenly."""
    import numpy as np

    media = np.zeros(batch.num_rows)
    for name in ("image", "video"):
        if name in batch.schema.names and batch.schema.field(name).type == MEDIA:  # not a carried column
            lengths = pc.binary_length(batch.column(name).field("bytes"))
            media += pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False)
    rest = max(batch.nbytes - float(media.sum()), 0.0)
    return media + rest / max(batch.num_rows, 1)


def _writer_options(row_bytes: float) -> dict[str, Any]:
    """zstd; pages of about 1 MB a reader can fetch and decode one at a time: no dictionary (a dictionary page
    holds a whole column chunk's values: 200 MB of images to read one), a page cut every few rows of ``row_bytes``
    (a page holds at least ``write_batch_size`` values) and a page index; content-defined pages where pyarrow has
    them (the Hub's storage deduplicates a re-upload's unchanged pages), as ``datasets.push_to_hub`` writes."""
    import inspect

    options: dict[str, Any] = {
        "compression": "zstd",
        "use_dictionary": False,
        "write_batch_size": max(1, min(1024, int(PAGE_BYTES // max(row_bytes, 1)))),
        "write_page_index": True,
    }
    if "use_content_defined_chunking" in inspect.signature(pq.ParquetWriter.__init__).parameters:
        options["use_content_defined_chunking"] = True
    return options


def _refuse_earlier(fs: Any, base: str, out_dir: str, overwrite: bool) -> None:
    """An earlier publish in ``out_dir`` is replaced only with ``overwrite`` (its card may have been edited)."""
    if overwrite or not fs.isdir(base) or not is_caprl_run(fs, base) or run_command(fs, base) != COMMAND:
        return
    if fs.exists(join(base, DATASET_CARD)) or fs.exists(join(base, "data")):
        raise CaprlError(
            f"{out_dir} already holds a published dataset; pass --overwrite to replace it (its README.md too), "
            "or choose another OUT_DIR"
        )


# --------------------------------------------------------------------------- the card

CARD = """---
{{ front_matter }}---

# {{ title }}

{{ rows }} {{ what }} captioned by `{{ model }}` with caprl-kit's `caprl annotate`
({{ n }} caption{{ 's' if n > 1 else '' }} per item{{ ', all in `captions`; `caption` is the first' if n > 1 else '' }}).

```python
from datasets import load_dataset

ds = load_dataset("{{ load_path }}", split="train")
```

## How the captions were made

| | |
|---|---|
| captioner | `{{ model }}` ({{ backend }} back end) |
| sampling | {{ sampling }} |
{% for kind, prompt_id in prompt_ids %}
| {{ kind }} prompt | `{{ prompt_id }}` (text below) |
{% endfor %}
{% if system %}
| system prompt | below |
{% endif %}
{% for line in media_lines %}
| {{ line[0] }} | {{ line[1] }} |
{% endfor %}

{% for kind, text in prompts %}
{{ kind }} prompt:

```text
{{ text }}
```

{% endfor %}
{% if system %}
System prompt:

```text
{{ system }}
```

{% endif %}
## Counts

| | |
|---|---|
| items in the run | {{ info.items_total }} |
| captioned (`ok`) | {{ info.ok }} |
| failed | {{ info.failed }} |
| rows published | {{ rows }} |
| media | {{ media }} |
| completion tokens | {{ "{:,}".format(info.completion_tokens) }} ({{ tokens_per_caption }} per caption) |
{% if partial %}
| shards | {{ info.shards_done }} of {{ info.shards_total }} (a partial run) |
{% endif %}

{% if statuses %}
Rows by status{{ ' (only `ok` rows are published)' if not include_failed else '' }}:

| status | rows |
|---|---|
{% for st, count in statuses %}
| `{{ st }}` | {{ count }} |
{% endfor %}

{% endif %}
{% if monitors %}
Caption monitors (share of the captions carrying each hygiene flag):

| flag | share |
|---|---|
{% for flag, rate in monitors %}
| {{ flag }} | {{ "%.2f" | format(rate * 100) }}% |
{% endfor %}

{% endif %}
## Columns

| column | type | description |
|---|---|---|
{% for name, type, description in columns %}
| `{{ name }}` | {{ type }} | {{ description }} |
{% endfor %}

## Files

{{ files }} Parquet file{{ 's' if files > 1 else '' }} under `data/`, {{ groups }} row group{{ 's' if groups > 1 else '' }}
of {{ group_rows }} rows and {{ group_bytes }} each (uncompressed; target {{ target }}).

## Provenance

Made with caprl-kit {{ kit }} from an annotate run started {{ created_at }} (input fingerprint
`{{ fingerprint }}`){% if packages %}; {{ packages }}{% endif %}.
"""


def render_card(
    run_dir: str,
    cfg: AnnotateConfig,
    info: dict[str, Any],
    survey: Survey,
    features: Any,
    result: Published,
    opts: PublishOptions,
) -> str:
    """The dataset card: YAML front matter (``configs``/``data_files``, ``dataset_info`` with the features, as
    ``datasets`` writes it) and the body (captioner, prompts, sampling, counts, status counts, monitor rates)."""
    import jinja2
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    manifest = RunDir(run_dir, AnnotationRow).manifest()
    assert manifest is not None  # _read_run checked it
    nbytes = sum(g.bytes for g in result.row_groups)
    size = sum(g.compressed for g in result.row_groups)
    splits = SplitDict({"train": SplitInfo("train", num_bytes=nbytes, num_examples=result.rows)})
    kinds = [k for k in ("image", "video") if survey.kinds[k]]
    data = DatasetCardData(
        pretty_name=opts.name or posixpath.basename(run_dir.rstrip("/")),
        task_categories=["image-to-text" if k == "image" else "video-text-to-text" for k in kinds],
        size_categories=[_size_category(result.rows)],
        tags=["caprl", "captions", "synthetic"],
    )
    DatasetInfosDict(
        {"default": DatasetInfo(features=features, splits=splits, download_size=size, dataset_size=nbytes)}
    ).to_dataset_card_data(data)
    MetadataConfigs({"default": {"data_files": [{"split": "train", "path": PUBLISH_DATA_GLOB}]}}).to_dataset_card_data(
        data
    )
    b = cfg.backend
    s = b.sampling
    sampling = (
        f"n={s.n}, temperature={s.temperature}, top_p={s.top_p}, top_k={s.top_k}, "
        f"max_tokens={s.max_tokens}, seed={s.seed}, repetition_penalty={s.repetition_penalty}"
    )
    media_lines = []
    if "image" in kinds:
        media_lines.append(("images", f"resized to {cfg.media.min_pixels}-{cfg.media.max_pixels} pixels"))
    if "video" in kinds:
        m = cfg.media
        media_lines.append(
            (
                "videos",
                f"{m.video_fps} fps, {m.video_min_frames}-{m.video_max_frames} frames of at "
                f"most {m.video_max_pixels} pixels",
            )
        )
    own = AnnotationRow.model_fields
    descriptions = {
        "image": "The image as captioned (its original bytes)",
        "video": "The video as captioned (its original bytes)",
    }
    for name in features:
        if name not in descriptions:
            field_ = own.get(name)
            text = field_.description if field_ is not None else "Carried from the input (input.carry_columns)"
            descriptions[name] = (text or "") + (" (JSON text)" if name in result.json_columns else "")
    columns = [(n, _type_name(features[n]), descriptions[n].replace("|", "/")) for n in features]
    groups = result.row_groups
    tokens = info["completion_tokens"]
    n_captions = max(1, info["ok"] * s.n)
    env = jinja2.Environment(autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(CARD).render(
        front_matter=data.to_yaml() + "\n",
        title=opts.name or posixpath.basename(run_dir.rstrip("/")),
        rows=f"{result.rows:,}",
        what=_what(survey, kinds, result.rows),
        model=", ".join(sorted(survey.models)) or b.model,
        backend=b.name,
        n=s.n,
        load_path=opts.repo_id or "OWNER/NAME",
        sampling=sampling,
        prompt_ids=[
            (k, cfg.prompt.video if k == "video" else cfg.prompt.image) if not cfg.prompt.text else (k, "custom")
            for k in kinds
        ],
        prompts=[(k, survey.prompts[k]) for k in kinds if k in survey.prompts],
        system=cfg.prompt.system,
        media_lines=media_lines,
        info=info,
        media=result.media,
        tokens_per_caption=f"{tokens / n_captions:.1f}",
        partial=info["shards_done"] < info["shards_total"],
        statuses=sorted(info["status_counts"].items(), key=lambda kv: -kv[1]),
        include_failed=opts.include_failed,
        monitors=sorted(info["caption_flags"].items()),
        columns=columns,
        files=len(result.files),
        groups=len(groups),
        group_rows=_span([g.rows for g in groups], str),
        group_bytes=_span([g.bytes for g in groups], _mb),
        target=_mb(opts.row_group_bytes),
        kit=kit_version(),
        created_at=manifest.created_at,
        fingerprint=manifest.input_fingerprint[:16],
        packages=", ".join(f"{k} {v}" for k, v in manifest.packages.items() if k != "caprl-kit"),
    )


def _what(survey: Survey, kinds: list[str], rows: int) -> str:
    """``images`` / ``videos``, or ``items (9 images, 1 video)``."""
    if len(kinds) == 1:
        return f"{kinds[0]}s" if rows != 1 else kinds[0]
    return "items (" + ", ".join(f"{survey.kinds[k]:,} {k}{'s' if survey.kinds[k] != 1 else ''}" for k in kinds) + ")"


def _type_name(feature: Any) -> str:
    from datasets import Image, List, Value, Video

    if isinstance(feature, Image | Video):
        return type(feature).__name__
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, List):
        return f"list[{_type_name(feature.feature)}]"
    return type(feature).__name__


def _span(values: list[int], fmt: Any) -> str:
    if not values:
        return "0"
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 10**5 else f"{n / 1e3:.1f} KB"


def _size_category(n: int) -> str:
    for limit, name in (
        (10**3, "n<1K"),
        (10**4, "1K<n<10K"),
        (10**5, "10K<n<100K"),
        (10**6, "100K<n<1M"),
        (10**7, "1M<n<10M"),
        (10**8, "10M<n<100M"),
        (10**9, "100M<n<1B"),
    ):
        if n < limit:
            return name
    return "n>1T" if n >= 10**12 else "1B<n<10B" if n < 10**10 else "10B<n<100B" if n < 10**11 else "100B<n<1T"


def card_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (for tests and checks)."""
    _, head, _ = text.split("---\n", 2)
    return dict(yaml.safe_load(head))
