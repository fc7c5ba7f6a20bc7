"""Base class of every artifact model: name, version and where it is produced and read."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Artifact(BaseModel):
    """A row (Parquet) or a document (JSON) that caprl-kit writes. The pydantic model is the source of truth;
    the JSON Schema and Arrow schema in ``data_schemas/`` are generated from it."""

    model_config = ConfigDict(extra="forbid")

    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1
    producer: ClassVar[str]
    consumer: ClassVar[str]
    file_pattern: ClassVar[str]
    example: ClassVar[dict[str, Any]]

    @classmethod
    def schema_id(cls) -> str:
        return f"{cls.schema_name}/v{cls.schema_version}"

    @classmethod
    def arrow_schema(cls):  # -> pyarrow.Schema (imported lazily)
        from caprl_kit.schemas._arrow import model_to_arrow

        return model_to_arrow(cls)
