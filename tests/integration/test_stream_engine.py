"""The streaming stage engine (runners/stream.py + runners/driver.py): shards are committed as they complete while
later shards are in the engine, a failed stream redoes only uncommitted shards (every item once), curate lists its
input once, and engine failures in curate's and eval's answering are rows with a status in a finished run.

The back ends here are the real ``lexical`` answerer; a wrapper only injects what a real engine cannot do on demand
(a response that arrives late, a request that fails, a stream that breaks)."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator

import polars as pl
import pytest

from caprl_kit.backends import BACKENDS
from caprl_kit.backends.base import IDLE, Request, Response
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.lexical import LexicalBackend
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.pipeline import run as curate
from caprl_kit.errors import EngineDown
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run as evaluate
from caprl_kit.io.shards import ShardSpec, iter_shards
from caprl_kit.runners.local import run_stream
from caprl_kit.runners.stream import LiveStream, ShardStream, Work
from caprl_kit.synthetic import write_scenes


class Flaky(LexicalBackend):
    """The lexical answerer, failing every request whose prompt mentions ``POISON`` (an item-level failure)."""

    name = "flaky"

    def generate(self, requests):  # type: ignore[override]
        ok = [r for r in requests if "POISON" not in str(r.messages)]
        good = iter(super().generate(ok))
        return [next(good) if "POISON" not in str(r.messages)
                else Response.failed("generation_failed", "injected", r.id) for r in requests]


@pytest.fixture(autouse=True)
def flaky_backend():
    BACKENDS.register("flaky", Flaky)
    yield
    BACKENDS._entries.pop("flaky", None)  # type: ignore[attr-defined]


class EchoStage:
    """A stage whose rows are the request texts, recording the order of commits."""

    engine_label = "echo"

    def __init__(self) -> None:
        self.committed: list[int] = []
        self.rows: dict[int, list[dict[str, Any]]] = {}

    def plan(self, spec: ShardSpec, items: list[str]) -> Iterator[Work]:
        for it in items:
            yield Work([Request.user(it)], lambda got, it=it: [{"item": it, "ok": got[0].ok}])

    def commit(self, spec, items, rows, responses, opened):
        self.committed.append(spec.shard_id)
        self.rows[spec.shard_id] = rows
        return spec.shard_id


class HoldFirst:
    """Answers every request at once, except shard 0's first request, which arrives last (a long caption)."""

    def stream(self, requests: Iterable[Request], **_: Any) -> Iterator[Response]:
        held = None
        for r in requests:
            if r.id == "0/0/0":
                held = r
                continue
            yield Response(texts=["x"], id=r.id)
        assert held is not None
        yield Response(texts=["late"], id=held.id)


def test_a_shard_commits_when_its_last_response_arrives_not_in_input_order() -> None:
    stage = EchoStage()
    shards = list(iter_shards([f"item {i}" for i in range(7)], 3))
    out = list(ShardStream(stage, HoldFirst()).run(shards))
    assert stage.committed == [1, 2, 0], "shards 1 and 2 are committed while shard 0 waits for its slow request"
    assert out == [1, 2, 0]
    assert [r["item"] for r in stage.rows[0]] == ["item 0", "item 1", "item 2"], "rows keep input order"


class BreaksOnce:
    """A stream that breaks after a few responses the first time (an engine crash), then works."""

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, requests: Iterable[Request], **_: Any) -> Iterator[Response]:
        self.calls += 1
        for n, r in enumerate(r for r in requests if r is not IDLE):  # a live feed's IDLE: nothing to run
            if self.calls == 1 and n == 4:
                raise RuntimeError("engine crashed")
            yield Response(texts=["x"], id=r.id)


def test_a_broken_stream_redoes_only_uncommitted_shards_and_every_item_lands_once() -> None:
    stage, backend = EchoStage(), BreaksOnce()

    class Worker:
        def open_stream(self) -> ShardStream:
            return ShardStream(stage, backend)

    items = [f"item {i}" for i in range(8)]
    written = run_stream(Worker(), iter_shards(items, 2), max_retries=1)
    assert backend.calls == 2
    assert sorted(written) == [0, 1, 2, 3] and sorted(stage.committed) == [0, 1, 2, 3]
    assert stage.committed.count(0) == 1, "a committed shard is not redone"
    assert sorted(r["item"] for rows in stage.rows.values() for r in rows) == items


class BreaksAfterEachShard:
    """A stream that breaks after its first shard on each of its first three runs: progress between failures."""

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, requests: Iterable[Request], **_: Any) -> Iterator[Response]:
        self.calls += 1
        for n, r in enumerate(requests):
            if self.calls <= 3 and n == 4:  # after the first shard of this run was committed
                raise RuntimeError("engine crashed")
            yield Response(texts=["x"], id=r.id)


def test_the_retry_budget_is_per_failure_streak_in_a_finite_stream_too() -> None:
    """Three breaks with a committed shard between each: max_retries=1 is enough (as LiveStream counts)."""
    stage, backend = EchoStage(), BreaksAfterEachShard()

    class Worker:
        def open_stream(self) -> ShardStream:
            return ShardStream(stage, backend)

    items = [f"item {i}" for i in range(14)]  # each broken run commits the two shards it finished before breaking
    written = run_stream(Worker(), iter_shards(items, 2), max_retries=1)
    assert backend.calls == 4 and sorted(written) == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(r["item"] for rows in stage.rows.values() for r in rows) == sorted(items)


def _manifest(root: Path, n: int = 9) -> Path:
    scenes = write_scenes(root / "images", n)
    rng = random.Random(0)
    rows = [{"path": f"images/{s.key}.png", "qa": s.mcqs(rng), "caption": s.caption()} for s in scenes]
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root / "m.jsonl"


def test_curate_lists_its_input_once_plus_the_fingerprint_pass(tmp_path: Path, monkeypatch) -> None:
    import caprl_kit.curate.pipeline as pipeline

    passes = []
    real = pipeline.iter_items

    def counted(cfg):
        passes.append(1)
        return real(cfg)

    monkeypatch.setattr(pipeline, "iter_items", counted)
    cfg = CurateConfig.model_validate({"input": {"path": str(_manifest(tmp_path))}, "import_mode": "qa",
                                       "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
                                       "sharding": {"shard_size": 4}, "output_dir": str(tmp_path / "out")})
    report = curate(cfg)
    assert report.n_items == 9 and report.n_ok > 0
    assert len(passes) == 2, f"input listed {len(passes)} times (fingerprint + generate expected)"
    passes.clear()
    curate(cfg)  # a resumed run: nothing to redo, the input is still only fingerprinted and read by generate
    assert len(passes) == 2


def test_curate_answer_failures_are_dropped_questions_in_a_finished_run(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rows[1]["caption"] = "POISON " + rows[1]["caption"]  # every answer with this caption as evidence fails
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = CurateConfig.model_validate({"input": {"path": str(manifest)}, "import_mode": "qa",
                                       "answer": {"backend": {"name": "flaky"}, "evidence": "caption"},
                                       "sharding": {"shard_size": 4}, "output_dir": str(tmp_path / "out")})
    report = curate(cfg)
    audit = pl.read_parquet(tmp_path / "out" / "dataset" / "audit.parquet")
    failed = audit.filter(pl.col("reason") == "answer_failed")
    assert set(failed["key"]) == {rows[1]["path"]} and failed.height == len(rows[1]["qa"])
    funnel = json.loads((tmp_path / "out" / "dataset" / "funnel.json").read_text())
    assert funnel["items_dropped"].get("no_question_kept") == 1 and report.n_ok == 8
    stats = json.loads(next((tmp_path / "out" / "answer").glob("00000_stats.json")).read_text())
    assert stats["status_counts"]["answer_failed"] == len(rows[1]["qa"])


def test_eval_answer_failures_are_rows_not_scored_and_counted(tmp_path: Path, tiny_models) -> None:
    scenes = write_scenes(tmp_path / "imgs", 4)
    bench = [{"image": f"imgs/{s.key}.png", "question": "POISON what colour?" if i == 2 else "What colour?",
              "options": ["red", "blue", "green", "yellow"], "answer": "A"} for i, s in enumerate(scenes)]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in bench) + "\n")
    cfg = EvalConfig.model_validate({
        "benchmarks": [{"name": "b", "path": str(tmp_path / "b.jsonl")}],
        "captioner": {"name": "transformers", "model": str(tiny_models["captioner"]), "sampling": {"max_tokens": 4}},
        "answerer": {"name": "flaky"}, "sharding": {"shard_size": 2},
        "output_dir": str(tmp_path / "out")})
    report = evaluate(cfg)
    results = json.loads((tmp_path / "out" / "results_latest.json").read_text())
    task = results["tasks"]["b"]
    assert task["n_samples"] == 3 and task["n_failed"] == 1 and task["failed"] == {"answer_failed": 1}
    assert report.n_failed == 1 and report.status_counts == {"answer_failed": 1}
    samples = [json.loads(x) for x in next((tmp_path / "out").glob("samples_b_*.jsonl")).read_text().splitlines()]
    bad = [s for s in samples if s["status"] == "answer_failed"]
    assert len(bad) == 1 and bad[0]["score"] is None and "injected" in bad[0]["error_message"]


# --------------------------------------------------------------------------- one stream across a worker's calls


class OneBehind:
    """An engine whose answers lag one request behind its input: a request is answered when the next one arrives
    (or an ``IDLE``, or the end), so a shard's last request is still inside when the next shard could start."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def stream(self, requests: Iterable[Any], **_: Any) -> Iterator[Response]:
        held = None
        for r in requests:
            if r is not IDLE:
                self.log.append(f"in {r.id}")
            if held is not None:
                yield Response(texts=["x"], id=held.id)
            held = None if r is IDLE else r
        if held is not None:
            yield Response(texts=["x"], id=held.id)


class LoggedStage(EchoStage):
    """EchoStage that logs commits, returns ``ShardStats``-like results, makes no request for items named
    ``"empty"`` (a shard of undecodable files) and can hold shard 0's planning until told."""

    def __init__(self, log: list[str], gate: threading.Event | None = None) -> None:
        super().__init__()
        self.log, self.gate = log, gate

    def plan(self, spec: ShardSpec, items: list[str]) -> Iterator[Work]:
        if spec.shard_id == 0 and self.gate is not None:
            assert self.gate.wait(10)
        for it in items:
            if it == "empty":
                yield Work([], lambda got: [{"item": "empty", "ok": False}])
            else:
                yield Work([Request.user(it)], lambda got, it=it: [{"item": it, "ok": got[0].ok}])

    def commit(self, spec, items, rows, responses, opened):
        super().commit(spec, items, rows, responses, opened)
        self.log.append(f"commit {spec.shard_id}")
        return SimpleNamespace(shard_id=spec.shard_id, rows=rows)


class StreamWorker:
    def __init__(self, stage: Any, backend: Any) -> None:
        self.stage, self.backend, self.opened = stage, backend, 0

    def open_stream(self) -> ShardStream:
        self.opened += 1
        return ShardStream(self.stage, self.backend)


def _calls(live: LiveStream, shards: list[tuple[ShardSpec, list[str]]]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = [None] * len(shards)

    def call(i: int) -> None:
        try:
            results[i] = live.run(*shards[i])
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
        time.sleep(0.05)  # calls arrive in shard order, as the runner sends them
    return results, threads


def test_a_workers_next_shard_enters_the_engine_before_the_last_one_commits() -> None:
    log: list[str] = []
    gate = threading.Event()
    live = LiveStream(StreamWorker(LoggedStage(log, gate), OneBehind(log)), max_retries=0)
    shards = list(iter_shards([f"item {i}" for i in range(4)], 2))
    results, threads = _calls(live, shards)
    deadline = time.monotonic() + 10
    while len(live.waiting) < 2 and time.monotonic() < deadline:  # both calls are waiting: shard 1 is queued
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert [r.shard_id for r in results] == [0, 1]
    assert log.index("in 1/0/0") < log.index("commit 0"), log  # no drain between the two shards
    assert [r["item"] for r in results[1].rows] == ["item 2", "item 3"]


def test_a_shard_that_needs_no_engine_is_committed_without_waiting_for_another() -> None:
    log: list[str] = []
    live = LiveStream(StreamWorker(LoggedStage(log), OneBehind(log)), max_retries=0)
    shards = [(ShardSpec(0, 0, 2), ["item 0", "item 1"]), (ShardSpec(1, 2, 4), ["empty", "empty"])]
    results, threads = _calls(live, shards)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "the last shard, with no request, hung"
    assert [r.shard_id for r in results] == [0, 1] and [r["item"] for r in results[1].rows] == ["empty", "empty"]


def test_a_live_stream_that_breaks_is_reopened_with_its_uncommitted_shards() -> None:
    stage, backend = LoggedStage([]), BreaksOnce()
    worker = StreamWorker(stage, backend)
    live = LiveStream(worker, max_retries=1)
    shards = list(iter_shards([f"item {i}" for i in range(8)], 2))
    results, threads = _calls(live, shards)
    for t in threads:
        t.join(10)
    assert worker.opened == 2 and [r.shard_id for r in results] == [0, 1, 2, 3]
    assert sorted(stage.committed) == [0, 1, 2, 3], "every shard committed once"
    assert sorted(r["item"] for rows in stage.rows.values() for r in rows) == [f"item {i}" for i in range(8)]


def test_an_engine_that_is_gone_fails_every_waiting_call_and_the_next_ones() -> None:
    class Gone:
        def stream(self, requests: Iterable[Any], **_: Any) -> Iterator[Response]:
            for _ in requests:
                raise EngineDown("the engine core died")
            yield from ()

    live = LiveStream(StreamWorker(LoggedStage([]), Gone()), max_retries=3)
    results, threads = _calls(live, list(iter_shards(["a", "b", "c"], 2)))
    for t in threads:
        t.join(10)
    assert [type(r) for r in results] == [EngineDown, EngineDown]
    with pytest.raises(EngineDown):
        live.run(ShardSpec(5, 10, 11), ["d"])


class BreaksTwice:
    """First stream: holds three shards' requests, then breaks; second: breaks on its first request (before it
    took the other redo shards); then it works."""

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, requests: Iterable[Any], **_: Any) -> Iterator[Response]:
        self.calls += 1
        attempt = self.calls
        for r in requests:
            if r is IDLE:
                time.sleep(0.01)
                continue
            if attempt == 1 and r.id.startswith("2/"):
                raise RuntimeError("engine crashed")
            if attempt == 2:
                raise RuntimeError("engine crashed again")
            if attempt == 1:
                continue  # held: never answered by this stream
            yield Response(texts=["x"], id=r.id)


def test_a_second_break_keeps_the_redo_shards_it_had_not_taken() -> None:
    stage, backend = LoggedStage([]), BreaksTwice()
    live = LiveStream(StreamWorker(stage, backend), max_retries=3)
    results, threads = _calls(live, list(iter_shards([f"item {i}" for i in range(6)], 2)))
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a redo shard was lost and its caller hung"
    assert [r.shard_id for r in results] == [0, 1, 2] and sorted(stage.committed) == [0, 1, 2]
    assert backend.calls == 3


class SlowCommit(EchoStage):
    """A stage whose commit takes 0.3 s (a shard with embedded media compressed and uploaded)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def commit(self, spec, items, rows, responses, opened):
        self.log.append(f"commit {spec.shard_id} begins")
        time.sleep(0.3)
        self.log.append(f"commit {spec.shard_id} ends")
        return super().commit(spec, items, rows, responses, opened)


class Logged:
    """Answers every request at once, logging its arrival."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def stream(self, requests: Iterable[Any], **_: Any) -> Iterator[Response]:
        for r in requests:
            if r is IDLE:
                continue
            self.log.append(f"in {r.id}")
            time.sleep(0.01)
            yield Response(texts=["x"], id=r.id)


def test_commits_run_on_the_writer_thread_while_the_engine_takes_the_next_shards() -> None:
    log: list[str] = []
    stage = SlowCommit(log)
    written = list(ShardStream(stage, Logged(log)).run(iter_shards([f"item {i}" for i in range(12)], 4)))
    assert sorted(written) == [0, 1, 2] and sorted(stage.committed) == [0, 1, 2]
    begins, ends = log.index("commit 0 begins"), log.index("commit 0 ends")
    assert any(x.startswith("in 1/") for x in log[begins:ends]), f"the engine waited for a commit: {log}"
