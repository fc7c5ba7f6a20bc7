"""Embedded media are listed as locators (tar byte ranges, Parquet / HF rows) and read by the worker: the listing
never holds the bytes, and what the worker reads is exactly what the input embeds."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.errors import MediaError
from caprl_kit.io.config import InputConfig
from caprl_kit.io.locators import Locator, item_bytes, item_payload
from caprl_kit.io.readers import InputItem, iter_items
from media_factory import make_image_bytes

CAP = 1 << 20


def blobs(n: int) -> list[bytes]:
    return [make_image_bytes(color=(10 * i, 0, 0), size=(40 + i, 30)) for i in range(n)]


def write_tar(path: Path, members: list[tuple[str, bytes]], compress: bool = False) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()) if compress else buf.getvalue())


def test_tar_members_are_located_and_read_back_exactly(tmp_path: Path) -> None:
    data = blobs(3)
    write_tar(tmp_path / "a.tar", [m for i, d in enumerate(data) for m in ((f"s{i}.png", d), (f"s{i}.json", b"{}"))])
    items = list(iter_items(InputConfig(path=str(tmp_path / "*.tar"))))
    assert [it.key for it in items] == ["a.tar/s0", "a.tar/s1", "a.tar/s2"]
    assert all(it.data is None and it.locator.kind == "tar" for it in items)
    assert [it.size for it in items] == [len(d) for d in data]  # the fingerprint's sizes are the same as inline
    assert [item_payload(it, CAP) for it in items] == data
    assert len(pickle.dumps(items)) < 1500  # what travels to a worker is a description, not the media


def test_compressed_tar_keeps_bytes_inline(tmp_path: Path) -> None:
    data = blobs(2)
    write_tar(tmp_path / "a.tar.gz", [(f"s{i}.png", d) for i, d in enumerate(data)], compress=True)
    items = list(iter_items(InputConfig(path=str(tmp_path / "a.tar.gz"), format="webdataset")))
    assert [it.data for it in items] == data and all(it.locator is None for it in items)


def test_tar_member_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    write_tar(tmp_path / "a.tar", [("big.png", b"x" * 5000)])
    (item,) = iter_items(InputConfig(path=str(tmp_path / "a.tar")))
    with pytest.raises(MediaError) as err:
        item_payload(item, 1000)
    assert err.value.kind == "too_large" and "a.tar" in err.value.source


def test_tar_changed_since_listing_is_a_media_error(tmp_path: Path) -> None:
    write_tar(tmp_path / "a.tar", [("s0.png", blobs(1)[0])])
    (item,) = iter_items(InputConfig(path=str(tmp_path / "a.tar")))
    (tmp_path / "a.tar").write_bytes(b"short")
    with pytest.raises(MediaError, match="changed since the run began"):
        item_payload(item, CAP)


def test_parquet_bytes_column_is_not_read_by_the_listing(tmp_path: Path) -> None:
    data = blobs(5)
    table = pa.table({"id": [f"k{i}" for i in range(5)], "blob": data[:3] + [None, data[4]]})
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=2)  # rows span three row groups
    cfg = InputConfig(path=str(tmp_path / "m.parquet"), key_column="id", bytes_column="blob")
    items = list(iter_items(cfg))
    assert [it.key for it in items] == ["k0", "k1", "k2", "k3", "k4"]
    assert all(it.data is None and it.locator.kind == "parquet" for it in items)
    assert [it.locator.offset for it in items] == [0, 1, 2, 3, 4]
    assert [item_payload(it, CAP) for it in (items[0], items[2], items[4], items[1])] == [data[0], data[2], data[4],
                                                                                          data[1]]
    with pytest.raises(MediaError) as err:  # a row without bytes and without a path: that item's status row
        item_payload(items[3], CAP)
    assert err.value.kind == "no_media" and err.value.source == "k3"


def test_parquet_only_the_bytes_column(tmp_path: Path) -> None:
    data = blobs(3)
    pq.write_table(pa.table({"blob": data}), tmp_path / "m.parquet")
    items = list(iter_items(InputConfig(path=str(tmp_path / "m.parquet"), bytes_column="blob")))
    assert [it.key for it in items] == ["row_00000000", "row_00000001", "row_00000002"]
    assert [item_bytes(it, CAP) for it in items] == data


def test_parquet_names_a_missing_bytes_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"blob": blobs(1)}), tmp_path / "m.parquet")
    with pytest.raises(Exception, match="no column 'image_bytes'"):
        list(iter_items(InputConfig(path=str(tmp_path / "m.parquet"), bytes_column="image_bytes")))


def test_parquet_hf_image_struct_reads_paths_only(tmp_path: Path) -> None:
    data = blobs(2)
    on_disk = tmp_path / "disk.png"
    on_disk.write_bytes(data[1])
    image = pa.array([{"bytes": data[0], "path": "x.png"}, {"bytes": None, "path": str(on_disk)}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image}), tmp_path / "m.parquet")
    items = list(iter_items(InputConfig(path=str(tmp_path / "m.parquet"), path_column="image")))
    assert [it.data for it in items] == [None, None] and items[1].source == str(on_disk)
    assert item_payload(items[0], CAP) == data[0]  # bytes win over the path, as the HF layout means
    assert item_payload(items[1], CAP) is None and item_bytes(items[1], CAP) == data[1]  # no bytes: the path


def test_hf_dataset_image_column_located_with_sizes(tmp_path: Path) -> None:
    import datasets

    data = blobs(3)
    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data], "id": ["a", "b", "c"]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "hf"))
    items = list(iter_items(InputConfig(path=str(tmp_path / "hf"), key_column="id")))
    assert [it.key for it in items] == ["a", "b", "c"]
    assert all(it.data is None and it.locator.kind == "hf_dataset" for it in items)
    assert [it.size for it in items] == [len(d) for d in data]
    assert [item_payload(it, CAP) for it in items] == data


def test_locator_round_trips_through_the_generate_shard_struct() -> None:
    """The curate generate shard stores the locator as a struct column (not JSON text) and reads it back whole."""
    from dataclasses import asdict

    from caprl_kit.io.parquet import rows_to_table
    from caprl_kit.schemas.curate import MCQGenerationRow

    loc = Locator("parquet", "s3://bucket/a.parquet", 7, column="image", field="bytes")
    row = {"key": "k", "model": "m", "status": "ok", "media_locator": asdict(loc)}
    table = rows_to_table([row, {**row, "key": "j", "media_locator": None}], MCQGenerationRow)
    assert pa.types.is_struct(table.schema.field("media_locator").type)
    back = table.to_pylist()
    assert Locator(**back[0]["media_locator"]) == loc and back[1]["media_locator"] is None
    item = InputItem(key="k", locator=loc)
    assert pickle.loads(pickle.dumps(item)).locator == loc


def test_hf_dataset_with_a_plain_dict_column_and_a_relative_path(tmp_path: Path, monkeypatch) -> None:
    import datasets

    data = blobs(2)
    datasets.Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data]}).save_to_disk(str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    items = list(iter_items(InputConfig(path="hf", format="hf_dataset")))
    assert [it.locator.url for it in items] == [str(tmp_path / "hf")] * 2  # workers elsewhere open the same folder
    monkeypatch.chdir("/")
    assert [item_payload(it, CAP) for it in items] == data
