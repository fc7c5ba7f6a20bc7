"""Schema-checked, atomic Parquet shards tagged with their artifact's ``name/vN``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from caprl_kit.errors import SchemaError
from caprl_kit.io.fs import atomic_write_bytes, url_to_fs
from caprl_kit.schemas._arrow import json_fields
from caprl_kit.schemas._base import Artifact

SCHEMA_KEY = b"caprl.schema"


def user_columns(names: list[str], rows: list[dict[str, Any]]) -> pa.Schema | None:
    """Arrow types of the user's carried columns ``names`` in ``rows``, inferred from all their values (nested
    objects become structs, arrays lists; a column with no value is a string). A column whose values Arrow cannot
    type together (numbers in some rows, text in others) is stored as JSON text: those values are rewritten in
    ``rows``."""
    if not names:
        return None
    fields = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            typ = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            typ = pa.string()
            for row, value in zip(rows, values):
                row[name] = None if value is None else json.dumps(value, default=str, ensure_ascii=False)
        fields.append(pa.field(name, pa.string() if pa.types.is_null(typ) else typ))
    return pa.schema(fields)


def rows_to_table(
    rows: Iterable[BaseModel | dict[str, Any]], artifact: type[Artifact], extra: pa.Schema | None = None
) -> pa.Table:
    """Build a table with exactly ``artifact``'s Arrow schema (plus ``extra`` user columns).

    Dict rows are validated by the artifact's model (defaults filled in). Raises ``SchemaError`` on unknown
    columns, wrong types, or nulls in non-nullable columns.
    """
    schema = artifact.arrow_schema()
    user_names: set[str] = set()
    if extra is not None:
        clash = set(extra.names) & set(schema.names)
        if clash:
            raise SchemaError(f"user columns clash with reserved {artifact.schema_id()} columns: {sorted(clash)}")
        user_names = set(extra.names)
        schema = pa.schema(list(schema) + list(extra), metadata=schema.metadata)
    own = set(artifact.model_fields)
    as_json = json_fields(artifact)
    dicts = []
    for i, row in enumerate(rows):
        if isinstance(row, BaseModel):
            d, user = row.model_dump(), {}
        else:
            unknown = set(row) - own - user_names
            if unknown:
                raise SchemaError(f"row {i}: columns not in {artifact.schema_id()}: {sorted(unknown)}")
            try:
                d = artifact.model_validate({k: v for k, v in row.items() if k in own}).model_dump()
            except ValidationError as exc:
                raise SchemaError(f"row {i} does not match {artifact.schema_id()}: {exc}") from None
            user = {k: v for k, v in row.items() if k in user_names}
        for name in as_json:
            d[name] = json.dumps(d[name]) if d[name] is not None else None
        d.update(user)
        dicts.append(d)
    try:
        table = pa.Table.from_pylist(dicts, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise SchemaError(f"rows do not match {artifact.schema_id()}: {exc}") from exc
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"column '{field.name}' of {artifact.schema_id()} may not be null")
    return table


def write_shard(
    path: str,
    rows: Iterable[BaseModel | dict[str, Any]],
    artifact: type[Artifact],
    extra: pa.Schema | None = None,
    compression: str = "zstd",
) -> int:
    """Validate ``rows`` and write them atomically to ``path`` (any fsspec URL). Returns the row count."""
    table = rows_to_table(rows, artifact, extra)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, **_media_options(table))
    fs, fpath = url_to_fs(path)
    atomic_write_bytes(fs, fpath, buf.getvalue())
    return table.num_rows


def _media_options(table: pa.Table) -> dict[str, Any]:
    """A shard holding media bytes is written so that a reader can stream it a few rows at a time: its binary
    columns without a dictionary (a dictionary page holds every value of the column chunk, so reading one row
    would read the shard's media whole) and a page cut every few rows (a page holds at least ``write_batch_size``
    values, 1024 by default). Other shards are written as before."""
    binary = [
        f.name
        for f in table.schema
        if (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
        and table.column(f.name).null_count < table.num_rows
    ]
    if not binary:
        return {}
    per_row = table.nbytes / table.num_rows
    return {
        "use_dictionary": [n for n in table.schema.names if n not in binary],
        "write_batch_size": max(1, min(1024, int((1 << 20) // max(per_row, 1)))),
    }


def read_shard(path: str, artifact: type[Artifact] | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a shard (optionally only ``columns``); with ``artifact`` given, refuse a file of another schema."""
    fs, fpath = url_to_fs(path)
    with fs.open(fpath, "rb") as fh:
        table = pq.read_table(fh, columns=columns)
    if artifact is not None:
        found = (table.schema.metadata or {}).get(SCHEMA_KEY, b"").decode() or None
        if found != artifact.schema_id():
            raise SchemaError(f"{path} holds {found or 'untagged data'}, expected {artifact.schema_id()}")
    return table
