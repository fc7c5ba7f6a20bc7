"""In-process runner: build one worker, map it over the shards in order, skipping finished ones."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Set as AbstractSet
from typing import Any

from caprl_kit.errors import CaprlError, ShardFailed
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)

Worker = Callable[[ShardSpec, list[Any]], ShardStats]
#: builds a worker in the process that runs it; the local runner hands it the live progress
WorkerFactory = Callable[[Progress], Worker]


def advance_shard(progress: Progress, stage: str, stats: ShardStats) -> None:
    """A shard another process ran and committed counts on the driver's progress (its items, failures, tokens)."""
    progress.advance(
        stage, items=stats.n_items, failed=stats.n_failed, tokens=int(stats.metrics.get("completion_tokens", 0))
    )


def run_one(worker: Worker, spec: ShardSpec, items: list[Any], max_retries: int) -> ShardStats:
    """Run a shard; an exception (not per-item failures, which are rows) is retried, then ``ShardFailed``."""
    for attempt in range(max_retries + 1):
        try:
            return worker(spec, items)
        except CaprlError:
            raise
        except Exception as exc:
            if attempt == max_retries:
                raise ShardFailed(f"shard {spec.name} failed {attempt + 1} time(s): {exc!r}") from exc
            log.warning("shard %s failed (%r); retrying (%d/%d)", spec.name, exc, attempt + 1, max_retries)
    raise AssertionError("unreachable")


def _todo(
    shards: Iterable[tuple[ShardSpec, list[Any]]], done: AbstractSet[int], skips: list[int]
) -> Iterator[tuple[ShardSpec, list[Any]]]:
    for spec, items in shards:
        if spec.shard_id in done:
            skips[0] += 1
            continue
        yield spec, items


def run_stream(worker: Any, shards: Iterator[tuple[ShardSpec, list[Any]]], max_retries: int) -> list[ShardStats]:
    """Feed every shard through the worker's streaming engine; when it fails (not per item: those are rows), the
    shards it held but had not committed are fed again, at most ``max_retries`` times in a row (``next_attempt``),
    then ``ShardFailed`` (``EngineDown`` for an engine that kept failing)."""
    from caprl_kit.runners.stream import give_up, next_attempt

    written: list[ShardStats] = []
    source: Iterator[tuple[ShardSpec, list[Any]]] = shards
    attempt = 0
    while True:
        stream = worker.open_stream()
        committed = len(written)
        try:
            for stats in stream.run(source):
                written.append(stats)
            return written
        except CaprlError:
            raise
        except Exception as exc:
            left = stream.uncommitted()
            names = ", ".join(spec.name for spec, _ in left) or "none"
            attempt = next_attempt(attempt, len(written) > committed)
            if attempt > max_retries:
                raise give_up(exc, names, attempt) from exc
            log.warning(
                "the stream failed (%r) with shard(s) %s open; redoing them (%d/%d)", exc, names, attempt, max_retries
            )
            source = itertools.chain(left, source)


def run_local(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    factory: WorkerFactory,
    *,
    done: AbstractSet[int] = frozenset(),
    max_retries: int = 1,
    num_workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    stage: str = "annotate",
    resources: Any = None,  # one worker in this process: it uses whatever devices the process sees
    committed: Callable[[int], ShardStats | None] | None = None,  # a dead worker ends the run here: nothing redone
) -> tuple[list[ShardStats], int]:
    """Returns (stats of the shards written now, number of shards skipped as already done)."""
    worker: Worker | None = None
    written: list[ShardStats] = []
    skipped = 0
    skips = [0]  # shards skipped while the streaming engine pulls the input
    shards = iter(shards)
    try:
        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            if worker is None:
                worker = factory(progress or NullProgress())
            if hasattr(worker, "open_stream"):  # the streaming engine takes every remaining shard at once
                written += run_stream(worker, itertools.chain([(spec, items)], _todo(shards, done, skips)), max_retries)
                break
            written.append(run_one(worker, spec, items, max_retries))
        skipped += skips[0]
    finally:
        close = getattr(worker, "close", None)
        if close:
            close()
    return written, skipped
