"""The streaming stage engine: the work of every shard flows through one back-end stream.

A shard's life, from listing to commit (the walk a reader follows):

1. ``runners/driver.run_stage``: the stage (``Stage``: name, folder, resume identity, worker, shards, engines) is
   opened or resumed (``RunDir.open``: a changed identity is refused naming the keys; finished shards are skipped);
   the runner (local | multiprocess | ray) takes the shards not done, in input order.
2. The worker's ``open_stream()`` is a ``ShardStream`` over the stage and the process's pooled engine
   (``backends/pool.py``); the local runner feeds it every shard (``runners/local.run_stream``), the others keep one
   open across their calls (``LiveStream`` over a ``ShardFeed``), so the engine never drains between shards.
3. ``ShardStream._requests``: ``stage.plan(spec, items)`` yields the shard's ``Work`` lazily (media decoded a
   bounded window ahead); each request gets the id ``shard/work/request`` and goes into ``backend.stream``.
4. ``ShardStream._take``: each response is filed under its unit of work; a unit whose responses are all in makes
   its rows (``Work.finish``) and drops its media. An engine-level failure (``engine_failed``) is never a row: it
   breaks the stream (``EngineFailed``).
5. ``ShardStream._submit``: a shard whose every unit is finished goes to the writer thread, ``stage.commit``:
   Parquet under a temp name + rename, then the stats sidecar stamped with the resume identity (the done marker),
   while the engine already runs the next shards; ``_harvest`` hands the stats back and forgets the shard.
6. A broken stream: the commits in flight are waited for (``_settle``), the shards still open are the
   ``uncommitted()`` ones, and the runner redoes them on a new stream (``next_attempt``: ``runner.max_shard_retries``
   times in a row), then stops the run with ``give_up`` (``EngineDown`` for an engine that kept failing). A shard is
   committed or redone, never both, so every item is written exactly once.

Memory is bounded by the back end's ``in_flight`` and the stage's decode look-ahead, not by the shard size.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from caprl_kit.backends.base import IDLE, Request, Response, engine_failed
from caprl_kit.errors import CaprlError, EngineDown, EngineFailed, ShardFailed
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import utc_now
from caprl_kit.log import get_logger
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)

Row = dict[str, Any]


@dataclass
class Work:
    """One output unit of a shard: its requests (none: ``finish([])`` gives its rows at once) and how its rows are
    made from their responses, given in request order."""

    requests: list[Request]
    finish: Callable[[list[Response]], list[Row]]
    rows: list[Row] | None = None
    _got: list[Response | None] = field(default_factory=list, repr=False)
    _left: int = 0


class StreamStage(Protocol):
    """What a stage provides to the engine (annotate, curate generate/answer, eval answer)."""

    @property
    def engine_label(self) -> str:
        """What the engine was doing, for the message of an engine-level failure (``EngineFailed``)."""
        ...

    def plan(self, spec: ShardSpec, items: list[Any]) -> Iterable[Work]:
        """The shard's work in output order, produced lazily (it may decode media as it goes)."""
        ...

    def commit(
        self,
        spec: ShardSpec,
        items: list[Any],
        rows: list[Row],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> ShardStats:
        """Write the shard's rows (atomically, stats last) and return its stats (``StatsBuilder(opened=...)``)."""
        ...


def _no_engine(requests: Iterator[Request]) -> Iterator[Response]:
    """A stage without an engine (curate's import modes): planning alone makes every row."""
    for request in requests:
        if request is IDLE:  # commits in flight on the writer thread: ask again in a moment
            time.sleep(0.005)
            continue
        raise AssertionError(f"request {request.id} but this stage has no engine")
    return
    yield


def _done(_: list[Response]) -> list[Row]:
    raise AssertionError("a finished unit of work is finished once")


@dataclass
class _Open:
    spec: ShardSpec
    items: list[Any]
    works: list[Work] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    remaining: int = 0
    planned: bool = False
    opened: tuple[str, float] = field(default_factory=lambda: (utc_now(), time.perf_counter()))


@functools.cache
def warm_commit() -> None:
    """Import what a commit needs (Arrow's first ``from_pylist`` loads pandas: ~0.3 s) before the first request, so
    the first commit does not stall the engine's feed on imports; once per process."""
    import pyarrow as pa

    pa.Table.from_pylist([{"warm": 1}])


class ShardStream:
    """``for stats in ShardStream(stage, backend).run(shards)``: shards committed in the order they complete.

    A shard's life: ``_requests`` takes it from the input and plans its work (``stage.plan``), handing each
    request to the engine's stream; ``_take`` files each response under its unit of work; when the shard's last
    unit is finished its rows go to the writer thread (``stage.commit``: Parquet, then the stats sidecar), so the
    engine never waits for a commit; ``_harvest`` hands out the stats of finished commits and forgets the shard.
    A shard is in ``uncommitted()`` until its commit has finished; when the stream breaks, the commits in flight
    are waited for first, so a shard is either committed or redone, never both."""

    def __init__(self, stage: StreamStage, backend: Any, **stream_options: Any):
        self.stage, self.backend, self.options = stage, backend, stream_options
        self._open: dict[int, _Open] = {}
        self._committing: deque[tuple[int, Future]] = deque()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caprl-commit")
        warm_commit()

    def uncommitted(self) -> list[tuple[ShardSpec, list[Any]]]:
        """Shards taken from the input but not committed (to redo after a failure), in input order."""
        return [(sh.spec, sh.items) for _, sh in sorted(self._open.items())]

    def _requests(self, shards: Iterable[Any]) -> Generator[Request, None, None]:
        for shard in shards:
            if shard is IDLE:  # a live feed with no shard queued: the engine keeps running what it holds
                yield IDLE
                continue
            spec, items = shard
            sh = self._open[spec.shard_id] = _Open(spec, items)
            for wi, work in enumerate(self.stage.plan(spec, items)):
                sh.works.append(work)
                if not work.requests:
                    work.rows, work.finish = work.finish([]), _done
                    continue
                work._got, work._left = [None] * len(work.requests), len(work.requests)
                sh.remaining += 1
                requests, work.requests = work.requests, []  # the engine holds them until answered, we do not
                for ri, request in enumerate(requests):
                    request.id, request.group = f"{spec.shard_id}/{wi}/{ri}", spec.shard_id
                    yield request
            sh.planned = True
            if sh.remaining == 0:
                self._submit(spec.shard_id)

    def _take(self, resp: Response) -> None:
        if engine_failed(resp):  # never a row: the stream breaks and the runner redoes the uncommitted shards
            raise EngineFailed(f"{self.stage.engine_label}: request {resp.id} failed ({resp.error_kind}: {resp.error})")
        sid, wi, ri = (int(x) for x in str(resp.id).split("/"))
        sh = self._open[sid]
        work = sh.works[wi]
        work._got[ri] = resp
        work._left -= 1
        if work._left == 0:
            got = [r for r in work._got if r is not None]
            work.rows, work._got, work.finish = work.finish(got), [], _done  # frees what the closure held (media)
            sh.responses += got
            sh.remaining -= 1
            if sh.planned and sh.remaining == 0:
                self._submit(sid)

    def _submit(self, sid: int) -> None:
        """The shard is complete: its rows go to the writer thread."""
        sh = self._open[sid]
        rows = [row for work in sh.works for row in (work.rows or [])]
        sh.works = []
        self._committing.append(
            (sid, self._writer.submit(self.stage.commit, sh.spec, sh.items, rows, sh.responses, sh.opened))
        )

    def _harvest(self, wait: bool = False) -> Iterator[ShardStats]:
        """Stats of the finished commits in the order they were handed to the writer (``wait``: every one). A
        commit that failed raises here, its shard still uncommitted."""
        while self._committing and (wait or self._committing[0][1].done()):
            sid, fut = self._committing[0]
            stats = fut.result()
            self._committing.popleft()
            del self._open[sid]
            yield stats

    def _settle(self) -> list[ShardStats]:
        """After a break: wait for every commit in flight; the ones that succeeded are committed, the rest stay
        uncommitted (redone)."""
        done: list[ShardStats] = []
        while self._committing:
            sid, fut = self._committing.popleft()
            try:
                done.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - the shard is redone; the break itself is reported
                log.warning("committing shard %s failed (%r); it is redone", self._open[sid].spec.name, exc)
                continue
            del self._open[sid]
        self._writer.shutdown(wait=True)
        return done

    def busy(self) -> bool:
        """Requests inside the engine and not answered yet, or commits in flight (between shards: every planned
        request was handed out)."""
        return bool(self._committing) or any(sh.remaining for sh in self._open.values())

    def serve(self, feed: ShardFeed, on_commit: Callable[[ShardStats], None]) -> None:
        """Long-lived: shards come from ``feed`` as they are queued, each committed shard's stats go to
        ``on_commit`` (also a shard whose rows needed no engine, before the feed is waited on); returns when the feed
        is closed and every shard taken from it is committed."""

        def source() -> Iterator[Any]:
            while True:
                for stats in self._harvest():
                    on_commit(stats)
                shard = feed.pull(busy=self.busy())
                if shard is None:
                    return
                yield shard

        for stats in self.run(source()):
            on_commit(stats)

    def run(self, shards: Iterable[Any]) -> Iterator[ShardStats]:
        requests = self._requests(shards)
        responses = self.backend.stream(requests, **self.options) if self.backend is not None else _no_engine(requests)
        try:
            for resp in responses:
                self._take(resp)
                yield from self._harvest()
            yield from self._harvest(wait=True)
        except GeneratorExit:  # the consumer stopped early
            self._close(responses, requests)
            self._settle()
            raise
        except BaseException:  # the stream broke: what the writer finished is committed, the rest is redone
            self._close(responses, requests)
            yield from self._settle()
            raise
        self._close(responses, requests)
        self._writer.shutdown(wait=True)
        if self._open:  # a back end that lost a response: the shards are redone, never committed short
            names = ", ".join(sh.spec.name for sh in self._open.values())
            raise RuntimeError(f"the engine's stream ended without answering every request of shard(s) {names}")

    @staticmethod
    def _close(responses: Iterator[Response], requests: Generator[Request, None, None]) -> None:
        """The engine's stream cancels what it holds; pending decodes are dropped."""
        try:
            getattr(responses, "close", lambda: None)()
        finally:
            requests.close()


class ShardFeed:
    """A live source of shards for ``ShardStream.serve``: ``put`` from any thread (or process, over a
    ``multiprocessing`` queue), the stream pulls. A pull with nothing queued waits only while the engine is empty;
    while it holds requests the pull answers ``IDLE``, so the engine keeps running (a worker waiting for its next
    shard never stalls the last one's stragglers). ``first``: shards to hand out before the queue (a redo)."""

    CLOSED = None

    def __init__(self, source: Any | None = None, first: Iterable[tuple[ShardSpec, list[Any]]] = ()):
        self.queue = source if source is not None else queue.SimpleQueue()
        self.first = deque(first)

    def put(self, spec: ShardSpec, items: list[Any]) -> None:
        self.queue.put((spec, items))

    def close(self) -> None:
        self.queue.put(self.CLOSED)

    def pull(self, busy: bool) -> Any:
        """The next shard, ``IDLE`` (nothing queued, the engine busy) or None (closed)."""
        if self.first:
            return self.first.popleft()
        while True:
            try:
                return self.queue.get_nowait() if busy else self.queue.get(timeout=0.1)
            except queue.Empty:
                if busy:
                    return IDLE
                # short waits: Ctrl-C and shutdown are seen at once


def give_up(exc: BaseException, names: str, attempt: int) -> CaprlError:
    """The error that stops the run when a broken stream is not redone any more: the ``CaprlError`` itself, an
    engine that kept failing as ``EngineDown``, anything else as ``ShardFailed``."""
    if isinstance(exc, CaprlError):
        return exc
    if isinstance(exc, EngineFailed):
        return EngineDown(
            f"{exc}; the engine kept failing ({attempt} time(s) in a row), so the run stopped with "
            f"shard(s) {names} uncommitted. Check that the engine is up and reachable, then rerun: "
            "finished shards are kept"
        )
    return ShardFailed(f"shard(s) {names} failed {attempt} time(s): {exc!r}")


def next_attempt(attempt: int, progressed: bool) -> int:
    """The one retry rule of a broken stream (``run_stream`` and ``LiveStream``): the budget
    (``runner.max_shard_retries``) is per failure streak, so a failure after a shard was committed starts over at
    1, and a stream that breaks again before committing anything uses up one more try."""
    return 1 if progressed else attempt + 1


class LiveStream:
    """One worker's streaming engine kept open across shards handed to it one call at a time (a Ray actor's
    concurrent calls): ``run(spec, items)`` queues the shard and returns its stats once committed. A stream that
    breaks is reopened with the shards it held but had not committed, up to ``max_retries`` times in a row (a
    commit in between starts the count again); then, or at once for a ``CaprlError`` (an engine that is gone),
    every waiting call fails with it."""

    def __init__(self, worker: Any, max_retries: int):
        self.worker, self.max_retries = worker, max_retries
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.waiting: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.commits = 0
        threading.Thread(target=self._serve, name="caprl-live-stream", daemon=True).start()

    def run(self, spec: ShardSpec, items: list[Any]) -> ShardStats:
        fut: Future = Future()
        with self.lock:
            if self.error is not None:
                raise self.error
            self.waiting[spec.shard_id] = fut
            self.queue.put((spec, items))
        return fut.result()

    def _committed(self, stats: ShardStats) -> None:
        self.commits += 1
        with self.lock:
            fut = self.waiting.pop(stats.shard_id, None)
        if fut is not None:
            fut.set_result(stats)

    def _serve(self) -> None:
        feed = ShardFeed(self.queue)
        attempt = 0
        while True:
            stream: ShardStream | None = None
            committed = self.commits
            try:
                stream = self.worker.open_stream()
                stream.serve(feed, self._committed)
                return
            except BaseException as exc:  # noqa: BLE001 - whatever it is, the waiting calls must hear of it
                left = stream.uncommitted() if stream is not None else []
                left += list(feed.first)  # redo shards the broken stream had not taken yet
                names = ", ".join(spec.name for spec, _ in left) or "none"
                attempt = next_attempt(attempt, self.commits > committed)
                if isinstance(exc, CaprlError) or attempt > self.max_retries or not isinstance(exc, Exception):
                    err = give_up(exc, names, attempt) if isinstance(exc, Exception) else exc
                    with self.lock:
                        self.error, waiting, self.waiting = err, list(self.waiting.values()), {}
                    for fut in waiting:
                        fut.set_exception(err)
                    return
                log.warning(
                    "the stream failed (%r) with shard(s) %s open; redoing them (%d/%d)",
                    exc,
                    names,
                    attempt,
                    self.max_retries,
                )
                feed = ShardFeed(self.queue, first=left)
