"""``input.path`` as a glob or a list of files (io/readers.input_files): the files read one after the other as one
input, relative paths against each file's folder, row keys running on; every wrong form one message naming the key."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from media_factory import make_image_bytes

from caprl_kit.errors import CaprlError
from caprl_kit.io.config import InputConfig
from caprl_kit.io.empty import describe, suggested_glob
from caprl_kit.io.readers import detect_format, iter_items


def items(**cfg) -> list[tuple[str, str | None]]:
    return [(it.key, it.source) for it in iter_items(InputConfig(**cfg))]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_glob_and_list_read_each_file_once_in_order(tmp_path: Path) -> None:
    for part in (1, 0, 2):  # written out of order: a glob reads its matches sorted
        write_jsonl(tmp_path / "a" / f"part_{part}.jsonl", [{"path": f"p{part}_{i}.png"} for i in range(2)])
    write_jsonl(tmp_path / "a" / "progress_part_0.jsonl", [{"index": 1}])
    got = items(path=f"{tmp_path}/a/part_*.jsonl")
    assert got == [(f"p{p}_{i}.png", f"{tmp_path}/a/p{p}_{i}.png") for p in range(3) for i in range(2)]
    listed = items(path=[f"{tmp_path}/a/part_2.jsonl", f"{tmp_path}/a/part_0.jsonl"])
    assert [k for k, _ in listed] == ["p2_0.png", "p2_1.png", "p0_0.png", "p0_1.png"]  # the list's order
    assert items(path=[f"{tmp_path}/a/part_0.jsonl"]) == items(path=f"{tmp_path}/a/part_0.jsonl")  # a list of one


def test_relative_paths_resolve_against_each_files_folder_and_row_keys_run_on(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x" / "m.jsonl", [{"path": "img.png"}, {"path": "img2.png"}])
    write_jsonl(tmp_path / "y" / "m.jsonl", [{"path": "img.png"}])
    got = items(path=[f"{tmp_path}/x/m.jsonl", f"{tmp_path}/y/m.jsonl"], key_column=None, duplicate_keys="suffix")
    assert [s for _, s in got] == [f"{tmp_path}/x/img.png", f"{tmp_path}/x/img2.png", f"{tmp_path}/y/img.png"]
    pq.write_table(pa.table({"path": ["a.png", "b.png"]}), tmp_path / "x" / "0.parquet")
    pq.write_table(pa.table({"path": ["c.png"]}), tmp_path / "y" / "1.parquet")
    # no key column and bytes only: keys are row numbers, running on over the files
    bytes_rows = pa.table({"img": [make_image_bytes(), make_image_bytes()]})
    pq.write_table(bytes_rows, tmp_path / "x" / "b0.parquet")
    pq.write_table(bytes_rows, tmp_path / "y" / "b1.parquet")
    keys = [k for k, _ in items(path=f"{tmp_path}/*/b*.parquet", path_column="none", bytes_column="img")]
    assert keys == ["row_00000000", "row_00000001", "row_00000002", "row_00000003"]
    media_root = items(path=f"{tmp_path}/*/[01].parquet", media_root=str(tmp_path / "media"))
    assert [s for _, s in media_root] == [f"{tmp_path}/media/{n}" for n in ("a.png", "b.png", "c.png")]


def test_a_bad_row_names_its_file_and_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "part_0.jsonl", [{"path": "a.png"}])
    write_jsonl(tmp_path / "part_1.jsonl", [{"path": "b.png"}, {"other": 1}])
    with pytest.raises(CaprlError, match=f"manifest {tmp_path}/part_1.jsonl row 1 has neither 'path' nor bytes"):
        items(path=f"{tmp_path}/part_*.jsonl")


def test_tar_shards_as_a_list(tmp_path: Path) -> None:
    for name in ("s0", "s1"):
        with tarfile.open(tmp_path / f"{name}.tar", "w") as tar:
            data = make_image_bytes()
            info = tarfile.TarInfo(f"{name}_item.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = items(path=[str(tmp_path / "s1.tar"), str(tmp_path / "s0.tar")])
    assert [k for k, _ in got] == ["s1.tar/s1_item", "s0.tar/s0_item"]


@pytest.mark.parametrize(
    ("path", "fmt", "message"),
    [
        ("{t}/none_*.jsonl", "auto", "input.path: the glob {t}/none_*.jsonl matches no file"),
        (["{t}/a.jsonl", "{t}/missing.jsonl"], "auto", "input.path.1: {t}/missing.jsonl does not exist"),
        (["{t}/a.jsonl", "{t}/sub"], "auto", "input.path.1: {t}/sub is a folder; a list names files"),
        (["{t}/a.jsonl", "{t}/a.jsonl"], "auto", "input.path names {t}/a.jsonl twice"),
        ("{t}/*.*", "auto", "mixes formats: {t}/a.jsonl (jsonl), {t}/b.parquet (parquet)"),
        ("{t}/sub/*.png", "auto", "names media files ({t}/sub/x.png); a glob or a list names manifests"),
        ("{t}/*.jsonl", "folder", "input.format=folder reads one folder"),
        ("{t}/sub", "jsonl", "input.path {t}/sub is a folder, and input.format=jsonl reads files: give them as "
                             "input.path={t}/sub/*.jsonl"),
    ],
)
def test_wrong_forms_are_one_message_naming_the_key(tmp_path: Path, path, fmt: str, message: str) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"path": "x.png"}])
    pq.write_table(pa.table({"path": ["x.png"]}), tmp_path / "b.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(make_image_bytes())
    t = str(tmp_path)
    cfg = InputConfig(path=[p.format(t=t) for p in path] if isinstance(path, list) else path.format(t=t), format=fmt)
    with pytest.raises(CaprlError) as err:
        detect_format(cfg)
    assert message.format(t=t) in str(err.value) and "\n" not in str(err.value)


def test_an_empty_list_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="an empty list names nothing"):
        InputConfig(path=[])


def test_a_folder_of_manifests_is_told_to_give_its_files(tmp_path: Path) -> None:
    for n in range(2):
        write_jsonl(tmp_path / f"part_{n}.jsonl", [{"path": "x.png"}])
        write_jsonl(tmp_path / f"progress_part_{n}.jsonl", [{"index": 0}])
    assert items(path=str(tmp_path)) == []  # a folder is read for its media: it has none
    message = describe(InputConfig(path=str(tmp_path)))
    assert message.endswith(f"give the files: input.path={tmp_path}/part_*.jsonl (a glob) or a list of them")
    assert suggested_glob("d", ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]) == (
        "d/train-*-of-*.parquet"
    )


def _qa_file(path: Path, ids: list[str], images: list[str]) -> Path:
    qa = [{"question": "What color?", "choices": ["A) red", "B) blue"], "answer": "A"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "images": [[i] for i in images],
                             "reward_model": [{"style": "rule", "ground_truth": qa}] * len(ids)}), path)
    return path


def pairs_cfg(path, tmp_path: Path):
    from caprl_kit.pairs.config import PairsConfig

    return PairsConfig.model_validate({"data": {"path": path}, "captioner": {"name": "transformers", "model": "m",
                                                                       "sampling": {"n": 2, "temperature": 1.0}},
                                       "reward": {"qa": {"answerer": {"name": "lexical"}}},
                                       "output_dir": str(tmp_path / "out")})


def test_pairs_data_path_takes_a_glob_and_its_sampling_run_lists_the_same_rows(tmp_path: Path) -> None:
    """``caprl train pairs``' data.path as a glob / a list: its QA rows and the sampling run's items (annotate over
    the same files) are the same rows, keyed alike, relative images against each file's folder."""
    from caprl_kit.pairs.pipeline import iter_rows, sampling_config

    _qa_file(tmp_path / "a" / "train-00000.parquet", ["a0", "a1"], ["x.png", "y.png"])
    _qa_file(tmp_path / "b" / "train-00001.parquet", ["b0"], ["z.png"])
    for path in (f"{tmp_path}/*/train-*.parquet", [f"{tmp_path}/a/train-00000.parquet",
                                                   f"{tmp_path}/b/train-00001.parquet"]):
        cfg = pairs_cfg(path, tmp_path)
        rows = list(iter_rows(cfg))
        assert [(r["key"], r["images"]) for r in rows] == [
            ("a0", [f"{tmp_path}/a/x.png"]), ("a1", [f"{tmp_path}/a/y.png"]), ("b0", [f"{tmp_path}/b/z.png"])]
        sampled = [(it.key, it.source) for it in iter_items(sampling_config(cfg).input)]
        assert sampled == [(r["key"], r["images"][0]) for r in rows]
    (tmp_path / "b" / "rows.jsonl").write_text("{}\n")
    cfg = pairs_cfg(f"{tmp_path}/b/*", tmp_path)
    with pytest.raises(CaprlError, match="mixes Parquet and JSONL files"):
        list(iter_rows(cfg))
    cfg = pairs_cfg(f"{tmp_path}/c/*.parquet", tmp_path)
    with pytest.raises(CaprlError, match=r"data.path: the glob .*/c/\*.parquet matches no file"):
        list(iter_rows(cfg))


def test_columns_carried_where_present(tmp_path: Path) -> None:
    """``with_carry_if_present`` (curate's ``prompt``): a row's value travels with its item where the row has one,
    a row without it is no error; CapRL-QA-75K's Parquet prompt arrives as its chat messages."""
    from official_layouts import IMAGE_PROMPT, write_qa75k

    write_jsonl(tmp_path / "m.jsonl", [{"path": "a.png", "prompt": "<image> Describe."}, {"path": "b.png"}])
    cfg = InputConfig(path=str(tmp_path / "m.jsonl")).with_carry_if_present(["prompt"])
    assert [it.extra for it in iter_items(cfg)] == [{"prompt": "<image> Describe."}, {}]
    assert [it.extra for it in iter_items(InputConfig(path=str(tmp_path / "m.jsonl")))] == [{}, {}]
    qa75k = write_qa75k(tmp_path / "qa75k" / "train-00000-of-00001.parquet", n=2)
    cfg = InputConfig(path=str(qa75k), path_column="image", key_column="id").with_carry_if_present(["prompt"])
    assert [it.extra for it in iter_items(cfg)] == [{"prompt": [{"role": "user", "content": IMAGE_PROMPT}]}] * 2
