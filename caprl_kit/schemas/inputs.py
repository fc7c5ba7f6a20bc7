"""Input manifest: one row per image or video to process."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from caprl_kit.schemas._base import Artifact

MediaType = Literal["image", "video"]


class InputManifestRow(Artifact):
    schema_name = "input_manifest"
    producer = "user, or `caprl curate` / `caprl annotate` readers"
    consumer = "every command's reader"
    file_pattern = "*.parquet, *.jsonl, *.csv"
    example = {"key": "coco/000000139", "source": "images/000000139.jpg", "media_bytes": None, "media_type": "image"}

    key: str = Field(description="Stable unique id of the item (defaults to the path relative to the input root)")
    source: str | None = Field(None, description="Local path or fsspec URL of the media; null when bytes are given")
    media_bytes: bytes | None = Field(None, description="Encoded media bytes, when the manifest embeds them")
    media_type: MediaType = Field("image", description="image or video")
