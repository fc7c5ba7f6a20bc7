"""caprl annotate publish's pieces without a run: sizes parsed, the published columns laid out (a carried column
named like a media column renamed, a type datasets has no feature for written as JSON text), and the row-group
cutter on batches of known sizes (every group within the target but a single larger row, alone; files rolled
over)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.publish import MEDIA, PublishOptions, Survey, _layout, _write, parse_size
from caprl_kit.errors import CaprlError


def test_sizes() -> None:
    assert parse_size("200MB") == 200_000_000 and parse_size("64KiB") == 65_536 and parse_size("1.5 GB") == 1.5e9
    assert parse_size("1000") == 1000 and parse_size(7) == 7
    with pytest.raises(CaprlError, match="is not a size"):
        parse_size("200 MBs")


def test_layout_renames_a_carried_media_name_and_writes_maps_as_json() -> None:
    cfg = AnnotateConfig.model_validate({"input": {"path": "x.jsonl"}, "backend": {"name": "lexical"}})
    survey = Survey(
        kinds=Counter(image=3), carried={"image": pa.string(), "scores": pa.map_(pa.string(), pa.float64())}
    )
    layout = _layout(cfg, survey, embed=True, include_failed=False)
    names = layout.schema.names
    assert names[:4] == ["key", "image", "caption", "captions"] and layout.media == ["image"]
    assert layout.schema.field("image").type == MEDIA and layout.source_of["input_image"] == "image"
    assert layout.as_json == {"scores"} and layout.schema.field("scores").type == pa.string()
    assert not {"media_bytes", "model", "prompt", "sampling", "status", "media_type", "n_frames"} & set(names)
    plain = _layout(cfg, survey, embed=False, include_failed=True)
    assert plain.media == [] and plain.schema.field("image").type == pa.string()  # the carried path, as it is
    assert {"status", "error_message"} <= set(plain.schema.names)


def test_row_groups_are_cut_by_bytes_and_files_roll_over(tmp_path: Path) -> None:
    schema = pa.schema([("key", pa.string()), ("image", MEDIA)])
    sizes = [30_000] * 7 + [150_000] + [30_000] * 5  # one row larger than the target

    def batches():
        for start in range(0, len(sizes), 4):  # batches that do not line up with the groups
            part = sizes[start : start + 4]
            image = pa.StructArray.from_arrays(
                [
                    pa.array([b"x" * n for n in part], pa.binary()),
                    pa.array([f"{start + i}.jpg" for i in range(len(part))]),
                ],
                fields=list(MEDIA),
            )
            yield pa.RecordBatch.from_arrays(
                [pa.array([str(start + i) for i in range(len(part))]), image], schema=schema
            )

    fs = fsspec.filesystem("file")
    opts = PublishOptions(row_group_bytes=100_000, file_bytes=150_000)
    files = _write(fs, str(tmp_path), str(tmp_path), batches(), schema, opts)
    groups = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        groups += [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
    assert [rows for rows, _ in groups] == [3, 3, 1, 1, 3, 2]  # filled to the target; the large row alone
    assert all(size <= 100_000 for rows, size in groups if rows > 1)
    assert len(files) == 3 and files[0].endswith("data/train-00000-of-00003.parquet")
    keys = [k for f in files for k in pq.read_table(f).column("key").to_pylist()]
    assert keys == [str(i) for i in range(len(sizes))]
