"""A shard holding media bytes is written for streaming reads: its binary column has no dictionary page (which
would hold every value of the shard) and its pages are cut every few rows, so reading a few rows reads a few
rows' bytes; a shard without media is written as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from caprl_kit.io.parquet import _media_options, rows_to_table, write_shard
from caprl_kit.schemas.annotation import AnnotationRow

SAMPLING = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "repetition_penalty": 1.0}


def rows(n: int, media: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "key": f"k{i}",
            "media_bytes": rng.bytes(300_000) if media else None,
            "caption": "A cat.",
            "captions": ["A cat."],
            "model": "m",
            "prompt_id": "caprl_image",
            "prompt": "Describe.",
            "sampling": SAMPLING,
            "status": "ok",
        }
        for i in range(n)
    ]


def test_media_shards_have_no_dictionary_and_small_pages(tmp_path: Path) -> None:
    write_shard(str(tmp_path / "media.parquet"), rows(12, media=True), AnnotationRow)
    write_shard(str(tmp_path / "plain.parquet"), rows(12, media=False), AnnotationRow)
    media = pq.ParquetFile(tmp_path / "media.parquet")
    col = media.metadata.row_group(0).column(media.schema_arrow.get_field_index("media_bytes"))
    assert not col.has_dictionary_page and "RLE_DICTIONARY" not in col.encodings
    # a page is cut every few rows: at least write_batch_size values go into one page (1024 by default)
    options = _media_options(rows_to_table(rows(12, media=True), AnnotationRow))
    assert options["write_batch_size"] <= 4 and "media_bytes" not in options["use_dictionary"]
    assert _media_options(rows_to_table(rows(12, media=False), AnnotationRow)) == {}
    key = media.metadata.row_group(0).column(media.schema_arrow.get_field_index("model"))
    assert key.has_dictionary_page  # the other columns keep their dictionary
    plain = pq.ParquetFile(tmp_path / "plain.parquet")
    model = plain.metadata.row_group(0).column(plain.schema_arrow.get_field_index("model"))
    assert model.has_dictionary_page
    assert [r["key"] for r in media.read(columns=["key"]).to_pylist()] == [f"k{i}" for i in range(12)]
