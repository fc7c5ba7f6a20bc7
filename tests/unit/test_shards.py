"""Shard I/O: atomic writes, schema enforcement, stats sidecars, resume and refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.errors import ResumeRefused, SchemaError
from caprl_kit.io.parquet import read_shard, rows_to_table, user_columns, write_shard
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import Fingerprint, iter_shards
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.errors import ShardFailed
from caprl_kit.runners.local import run_local
from caprl_kit.schemas import InputManifestRow, ShardStats
from caprl_kit.config import ConfigModel


class ToyConfig(ConfigModel):
    shard_size: int = 3
    suffix: str = "x"


def rows_for(items: list[str]) -> list[InputManifestRow]:
    return [InputManifestRow(key=k, source=f"/data/{k}.jpg") for k in items]


def toy_job(out: str, items: list[str], cfg: ToyConfig, overwrite: bool = False, fail_on: str | None = None):
    """A complete miniature job on the shared machinery: fingerprint -> open -> shards -> worker -> commit."""
    fp = Fingerprint()
    for k in items:
        fp.add(k)
    run = RunDir(out, InputManifestRow)
    done = run.open(command="toy", config=cfg, config_hash=str(hash(cfg.model_dump_json())), input_fingerprint=fp.hexdigest(),
                    n_items=fp.count, shard_size=cfg.shard_size, overwrite=overwrite)
    calls: list[int] = []

    def worker(spec, chunk):
        calls.append(spec.shard_id)
        if fail_on in chunk:
            raise RuntimeError(f"boom on {fail_on}")
        stats = StatsBuilder(spec.shard_id, InputManifestRow.schema_id())
        for _ in chunk:
            stats.add("ok")
        run.commit_shard(spec.shard_id, rows_for([k + cfg.suffix for k in chunk]), stats.build())
        return stats.build()

    written, skipped = run_local(iter_shards(items, cfg.shard_size), lambda progress: worker, done=done, max_retries=0)
    return run, calls, skipped


def test_iter_shards_cuts_the_input_in_order() -> None:
    streamed = list(iter_shards(range(7), 3))
    assert [(s.start, s.stop) for s, _ in streamed] == [(0, 3), (3, 6), (6, 7)]
    assert [c for _, c in streamed] == [[0, 1, 2], [3, 4, 5], [6]]


def test_shard_carries_schema_id_and_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "00000.parquet")
    assert write_shard(path, rows_for(["a", "b"]), InputManifestRow) == 2
    meta = pq.read_schema(path).metadata
    assert meta[b"caprl.schema"] == b"input_manifest/v1"
    table = read_shard(path, InputManifestRow)
    assert table.column("key").to_pylist() == ["a", "b"]
    assert table.schema.field("key").metadata[b"description"].startswith(b"Stable unique id")


def test_reader_refuses_other_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"key": ["a"]}), path)
    with pytest.raises(SchemaError, match="untagged data, expected input_manifest/v1"):
        read_shard(path, InputManifestRow)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"key": "a", "oops": 1}, "columns not in input_manifest/v1"),
        ({"key": 5, "source": None}, "row 0 does not match input_manifest/v1"),
        ({"key": None}, "row 0 does not match"),
    ],
)
def test_writer_enforces_the_schema(tmp_path: Path, row: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        write_shard(str(tmp_path / "00000.parquet"), [row], InputManifestRow)
    assert not (tmp_path / "00000.parquet").exists()


def test_user_columns_travel_but_may_not_clash() -> None:
    extra = pa.schema([pa.field("license", pa.string())])
    table = rows_to_table([{"key": "a", "license": "cc-by"}], InputManifestRow, extra)
    assert table.column("license").to_pylist() == ["cc-by"]
    with pytest.raises(SchemaError, match="clash"):
        rows_to_table([], InputManifestRow, pa.schema([pa.field("key", pa.string())]))


def test_carried_columns_keep_nested_values_typed() -> None:
    """Carried input columns of any nesting are written typed (structs, lists) from all of a shard's values; a
    column that mixes numbers and text goes as JSON text instead of failing the shard."""
    rows = [
        {"key": "a", "meta": {"license": "cc-by", "tags": ["x"]}, "score": 1, "mixed": 3},
        {"key": "b", "meta": {"license": "cc0", "tags": [], "extra": 2.5}, "score": None, "mixed": "three"},
        {"key": "c", "meta": None, "score": 2, "mixed": None},
    ]
    extra = user_columns(["meta", "score", "mixed", "empty"], rows)
    assert extra is not None
    assert pa.types.is_struct(extra.field("meta").type) and extra.field("score").type == pa.int64()
    assert extra.field("mixed").type == pa.string() and extra.field("empty").type == pa.string()
    table = rows_to_table(rows, InputManifestRow, extra)
    got = table.to_pylist()
    assert got[0]["meta"] == {"license": "cc-by", "tags": ["x"], "extra": None}
    assert got[1]["meta"]["extra"] == 2.5 and got[2]["meta"] is None
    assert [r["mixed"] for r in got] == ["3", '"three"', None] and [r["score"] for r in got] == [1, None, 2]


def test_kill_between_write_and_rename_leaves_no_visible_shard(tmp_path: Path) -> None:
    """A real SIGKILL after the data is written but before the rename."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal
        import caprl_kit.io.fs as fs
        from caprl_kit.io.parquet import write_shard
        from caprl_kit.schemas import InputManifestRow
        fs.commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        os.makedirs({str(out)!r}, exist_ok=True)
        write_shard({str(out / '00000.parquet')!r}, [{{"key": "a"}}], InputManifestRow)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 1 and names[0].startswith(".00000.parquet.tmp-")  # data was written ...
    assert not (out / "00000.parquet").exists()  # ... but no shard is visible
    # the next run cleans the partial file and redoes the shard
    run, calls, skipped = toy_job(str(out), ["a", "b"], ToyConfig())
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert calls == [0] and skipped == 0


def test_resume_skips_finished_shards_and_loses_nothing(tmp_path: Path) -> None:
    items = [f"i{n}" for n in range(8)]
    out = str(tmp_path / "run")
    with pytest.raises(ShardFailed):
        toy_job(out, items, ToyConfig(), fail_on="i4")  # dies in shard 1; shard 0 is done
    run = RunDir(out, InputManifestRow)
    assert run.done_shards() == {0}
    run, calls, skipped = toy_job(out, items, ToyConfig())
    assert calls == [1, 2] and skipped == 1
    keys = run.read_table().column("key").to_pylist()
    assert keys == [k + "x" for k in items]  # every item exactly once, in order
    stats = run.read_stats()
    assert [s.n_items for s in stats] == [3, 3, 2]
    assert all(isinstance(s, ShardStats) for s in stats)
    # a third run does nothing
    _, calls, skipped = toy_job(out, items, ToyConfig())
    assert calls == [] and skipped == 3


def test_changed_config_input_or_shard_size_is_refused(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    items = ["a", "b", "c", "d"]
    toy_job(out, items, ToyConfig())
    with pytest.raises(ResumeRefused, match=r"config changed \(suffix\).*--overwrite"):
        toy_job(out, items, ToyConfig(suffix="y"))
    with pytest.raises(ResumeRefused, match="input changed"):
        toy_job(out, items + ["e"], ToyConfig())
    with pytest.raises(ResumeRefused, match="shard_size 3 -> 2"):
        toy_job(out, items, ToyConfig(shard_size=2))
    # nothing was touched by the refused runs
    assert RunDir(out, InputManifestRow).read_table().column("key").to_pylist() == ["ax", "bx", "cx", "dx"]
    # --overwrite discards the old run
    run, calls, _ = toy_job(out, items, ToyConfig(suffix="y"), overwrite=True)
    assert calls == [0, 1]
    assert run.read_table().column("key").to_pylist() == ["ay", "by", "cy", "dy"]


def test_works_on_memory_filesystem() -> None:
    run, calls, _ = toy_job("memory://caprl-test/run", ["a", "b", "c", "d"], ToyConfig())
    assert calls == [0, 1]
    assert run.read_table().num_rows == 4
    manifest = json.loads(run.fs.cat(run.file("run_manifest.json")))
    assert manifest["n_shards"] == 2 and manifest["artifact"] == "input_manifest/v1"
    assert run.fs.exists(run.file("config.resolved.yaml"))


def test_error_histogram_is_capped() -> None:
    b = StatsBuilder(0, "annotation/v1", max_errors=2)
    for i in range(5):
        b.add("failed_to_decode", f"bad file {i}")
    b.add("failed_to_decode", "bad file 0")
    b.add("ok")
    s = b.build()
    assert s.n_items == 7 and s.n_ok == 1 and s.n_failed == 6
    assert s.errors == {"failed_to_decode: bad file 0": 2, "failed_to_decode: bad file 1": 1}
    assert s.errors_truncated == 3


def test_done_shards_reads_ids_of_any_width(tmp_path: Path) -> None:
    """Shard 100000 is named ``100000_stats.json`` (``{shard:05d}`` pads, never truncates) and reads back as
    100000, not 10000; unrelated files are ignored."""
    from caprl_kit.schemas.layout import SHARD_STATS

    run = RunDir(str(tmp_path / "run"), InputManifestRow)
    (tmp_path / "run").mkdir()
    for sid in (7, 99999, 100000, 1234567):
        (tmp_path / "run" / SHARD_STATS.format(shard=sid)).write_text("{}")
    (tmp_path / "run" / "notes_stats.json").write_text("{}")
    assert run.done_shards() == {7, 99999, 100000, 1234567}
