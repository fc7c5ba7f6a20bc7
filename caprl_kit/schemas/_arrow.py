"""pydantic model -> pyarrow schema. Field descriptions become Arrow field metadata.

Types: str->string, int->int64, float->float64, bool->bool, bytes->binary, list[T]->list, dict[str, T]->map,
nested model->struct, Optional->nullable, Literal[str...]->string. ``json_schema_extra={"arrow": "int32"}`` (or
``float32``) narrows a numeric field; ``{"arrow": "json"}`` stores any value as JSON text.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), bytes: pa.binary()}
_NARROW = {"int32": pa.int32(), "float32": pa.float32(), "int16": pa.int16(), "json": pa.string()}


def model_to_arrow(model: type[BaseModel]) -> pa.Schema:
    fields = [_field(name, info) for name, info in model.model_fields.items()]
    meta = {}
    if hasattr(model, "schema_id"):
        meta["caprl.schema"] = model.schema_id()
    return pa.schema(fields, metadata=meta or None)


def _field(name: str, info: Any) -> pa.Field:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("arrow") == "json":
        return pa.field(
            name,
            pa.string(),
            nullable=not info.is_required(),
            metadata={"description": f"{info.description} (JSON text)"},
        )
    arrow_type, nullable = _type(info.annotation)
    if extra.get("arrow"):
        arrow_type = _NARROW[extra["arrow"]]
    meta = {"description": info.description} if info.description else None
    return pa.field(name, arrow_type, nullable=nullable, metadata=meta)


def json_fields(model: type[BaseModel]) -> list[str]:
    """Fields stored as JSON text in Arrow (``json_schema_extra={"arrow": "json"}``)."""
    return [
        n
        for n, i in model.model_fields.items()
        if isinstance(i.json_schema_extra, dict) and i.json_schema_extra.get("arrow") == "json"
    ]


def _type(tp: Any) -> tuple[pa.DataType, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _type(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unions other than Optional[T] have no Arrow type: {tp}")
        return _type(members[0])[0], True
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return _SCALARS[type(values[0])], False
    if origin in (list, tuple):
        inner, _ = _type(typing.get_args(tp)[0])
        return pa.list_(inner), False
    if origin is dict:
        key, value = typing.get_args(tp)
        return pa.map_(_type(key)[0], _type(value)[0]), False
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return pa.struct([_field(n, i) for n, i in tp.model_fields.items()]), False
    if tp in _SCALARS:
        return _SCALARS[tp], False
    raise TypeError(f"no Arrow type for {tp!r}")
