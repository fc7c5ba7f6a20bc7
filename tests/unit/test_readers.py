"""Folder reader: symlinked folders followed once each (loops end with a warning), non-regular entries listed
without being opened; the small-file row reader (JSONL / Parquet) behind eval, reports and validation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from caprl_kit.io.config import InputConfig
from caprl_kit.io.readers import iter_items
from hang_guard import finishes_within
from media_factory import make_image_bytes


def keys(path: Path) -> list[str]:
    return [it.key for it in iter_items(InputConfig(path=str(path)))]


def test_symlinked_folders_are_followed_and_loops_end(tmp_path: Path, caplog) -> None:
    root = tmp_path / "in"
    (root / "sub" / "deep").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for p in (root / "a.png", root / "sub" / "b.png", root / "sub" / "deep" / "c.png", outside / "d.png"):
        p.write_bytes(make_image_bytes())
    (root / "sub" / "deep" / "up").symlink_to("../..")  # a loop back to the root
    (root / "sub" / "self").symlink_to(".")  # a loop onto its own folder
    (root / "ext").symlink_to(outside)  # a folder outside the root: followed
    (root / "zz_again").symlink_to("sub")  # the same folder by a second path: listed once, under the first
    (root / "broken.png").symlink_to("nowhere.png")  # listed; reading it gives file_not_found
    with caplog.at_level(logging.WARNING, logger="caprl_kit.io.readers"):
        listed = finishes_within(10, lambda: keys(root))
    assert listed == ["a.png", "broken.png", "ext/d.png", "sub/b.png", "sub/deep/c.png"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings
    assert sum("symlink loop" in w for w in warnings) == 2 and sum("already listed" in w for w in warnings) == 1
    assert any("sub/deep/up" in w for w in warnings)


def test_fifos_are_listed_without_being_opened(tmp_path: Path) -> None:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import fingerprint_input

    root = tmp_path / "in"
    root.mkdir()
    (root / "a.png").write_bytes(make_image_bytes())
    os.mkfifo(root / "pipe.png")  # listed: reading it is a not_a_regular_file row
    os.mkfifo(root / "pipe.txt")  # not media: ignored like any other non-media file
    fifos = [root / "pipe.png", root / "pipe.txt"]
    assert finishes_within(10, lambda: keys(root), fifos) == ["a.png", "pipe.png"]
    cfg = AnnotateConfig.model_validate({"input": {"path": str(root)}, "backend": {"name": "lexical"}})
    _, n = finishes_within(10, lambda: fingerprint_input(cfg), fifos)
    assert n == 2


def test_read_rows_jsonl_parquet_missing_and_bad_lines(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from caprl_kit.errors import CaprlError, ConfigError
    from caprl_kit.io.rows import read_rows

    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    pq.write_table(pa.table({"x": [1, 2], "y": ["a", "b"]}), tmp_path / "a.parquet")
    assert read_rows(str(tmp_path / "a.jsonl")) == [{"x": 1}, {"x": 2}]
    assert read_rows(str(tmp_path / "a.parquet"), columns=["x"]) == [{"x": 1}, {"x": 2}]
    assert read_rows(str(tmp_path / "none.jsonl"), missing_ok=True) == []
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n{"x": \n')
    with pytest.raises(ConfigError) as err:
        read_rows(str(tmp_path / "bad.jsonl"), key="captions.path")
    assert err.value.issues[0].path == "captions.path" and "bad.jsonl line 2 is not valid JSON" in str(err.value)
    with pytest.raises(CaprlError, match="does not exist"):
        read_rows(str(tmp_path / "none.jsonl"))


def test_read_rows_refuses_text_that_is_not_utf8(tmp_path) -> None:
    from caprl_kit.errors import ConfigError
    from caprl_kit.io.rows import read_rows

    (tmp_path / "latin.jsonl").write_bytes('{"caption": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_rows(str(tmp_path / "latin.jsonl"), key="captions.path")


def test_one_jsonl_parser_for_manifests_and_benchmarks(tmp_path) -> None:
    """The manifest reader and eval's benchmark loader parse JSON Lines with one parser: the same bad line gives the
    same message (file, line, column, the hint); a line that is JSON but not an object is refused by both."""
    from caprl_kit.errors import CaprlError
    from caprl_kit.evaluate.config import BenchmarkConfig
    from caprl_kit.evaluate.data import read_rows as read_benchmark
    from caprl_kit.io.rows import read_rows

    bad = tmp_path / "bad.jsonl"
    for text, fragment in (('{"image": "a.png", "answer": "A"}\n{broken\n', "line 2 is not valid JSON (Expecting "
                                                                             "property name enclosed in double quotes, "
                                                                             "column 2); JSONL holds one JSON object "
                                                                             "per line"),
                           ('{"image": "a.png", "answer": "A"}\n\n[1, 2]\n', "line 3 is not a JSON object (list); "
                                                                             "JSONL holds one JSON object per line")):
        bad.write_text(text)
        with pytest.raises(CaprlError) as manifest:
            read_rows(str(bad))
        with pytest.raises(CaprlError) as benchmark:
            read_benchmark(BenchmarkConfig(name="b", path=str(bad)))
        assert str(manifest.value) == f"{bad} {fragment}"
        assert str(benchmark.value) == f"benchmark b: {bad} {fragment}"


@pytest.mark.parametrize("layout", ["path", "image_struct"])
def test_hf_dataset_relative_paths_resolve_once_against_the_dataset_folder(tmp_path: Path, monkeypatch,
                                                                           layout: str) -> None:
    """A relative dataset path and the relative image paths in it are made absolute when the input is listed: a
    worker reading the item from another working directory (a Ray worker) finds the same file."""
    import datasets

    from caprl_kit.io.locators import item_bytes

    data = [make_image_bytes(color=(60 * i, 0, 0)) for i in range(2)]
    hf = tmp_path / "hf"
    names = [f"images/{i}.png" for i in range(2)]
    column = names if layout == "path" else [{"bytes": None, "path": n} for n in names]
    datasets.Dataset.from_dict({"id": ["a", "b"], "image": column}).save_to_disk(str(hf))
    (hf / "images").mkdir()  # the images inside the dataset's folder, named relative to it
    for n, d in zip(names, data):
        (hf / n).write_bytes(d)
    monkeypatch.chdir(tmp_path)
    items = list(iter_items(InputConfig(path="hf", format="hf_dataset", key_column="id")))
    assert [it.source for it in items] == [str(hf / n) for n in names]
    monkeypatch.chdir("/")  # the worker's working directory
    assert [item_bytes(it, 1 << 20) for it in items] == data
