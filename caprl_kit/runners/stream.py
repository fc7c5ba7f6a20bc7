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
from typing import Any, Generic, Protocol, TypeVar

from caprl_kit.backends.base import IDLE, Request, Response, engine_failed
from caprl_kit.errors import CaprlError, EngineDown, EngineFailed, ShardFailed
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import utc_now
from caprl_kit.log import get_logger

log = get_logger(__name__)

Row = dict[str, Any]


class Committed(Protocol):
    """What a stage's commit hands back: a batch stage's ``ShardStats``, the reward server's scores."""

    @property
    def shard_id(self) -> int: ...


C = TypeVar("C", bound=Committed)
C_co = TypeVar("C_co", bound=Committed, covariant=True)


@dataclass
class Work:
    """One output unit of a shard: its requests (none: ``finish([])`` gives its rows at once) and how its rows are
    made from their responses, given in request order."""

    requests: list[Request]
    finish: Callable[[list[Response]], list[Row]]
    rows: list[Row] | None = None
    _got: list[Response | None] = field(default_factory=list, repr=False)
    _left: int = 0


class StreamStage(Protocol[C_co]):
    """What a stage provides to the engine (annotate, curate generate/answer, eval answer, the reward server)."""

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
    ) -> C_co:
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


class InFlight:
    """Requests handed to the engine and not answered yet (``outstanding``) and the most at once (``peak``); one
    meter can follow the streams a ``LiveStream`` reopens."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.peak = 0


class ShardStream(Generic[C]):
    """``for stats in ShardStream(stage, backend).run(shards)``: shards committed in the order they complete.

    A shard's life: ``_requests`` takes it from the input and plans its work (``stage.plan``), handing each
    request to the engine's stream; ``_take`` files each response under its unit of work; when the shard's last
    unit is finished its rows go to the writer thread (``stage.commit``: Parquet, then the stats sidecar), so the
    engine never waits for a commit; ``_harvest`` hands out the stats of finished commits and forgets the shard.
    A shard is in ``uncommitted()`` until its commit has finished; when the stream breaks, the commits in flight
    are waited for first, so a shard is either committed or redone, never both."""

    def __init__(
        self,
        stage: StreamStage[C],
        backend: Any,
        *,
        meter: InFlight | None = None,
        answers_engine_failures: bool = False,
        **stream_options: Any,
    ):
        self.stage, self.backend, self.options = stage, backend, stream_options
        #: the stage's ``Work.finish`` takes an engine-level failure itself (the reward server answers that request
        #: alone with a 503) instead of it breaking the stream (a batch stage: never a row)
        self.answers_engine_failures = answers_engine_failures
        self.meter = meter if meter is not None else InFlight()
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
                    meter = self.meter
                    meter.outstanding += 1
                    meter.peak = max(meter.peak, meter.outstanding)
                    yield request
            sh.planned = True
            if sh.remaining == 0:
                self._submit(spec.shard_id)

    def _take(self, resp: Response) -> None:
        self.meter.outstanding -= 1
        if engine_failed(resp) and not self.answers_engine_failures:
            # never a row: the stream breaks and the runner redoes the uncommitted shards
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

    def _harvest(self, wait: bool = False) -> Iterator[C]:
        """Stats of the finished commits in the order they were handed to the writer (``wait``: every one). A
        commit that failed raises here, its shard still uncommitted."""
        while self._committing and (wait or self._committing[0][1].done()):
            sid, fut = self._committing[0]
            stats = fut.result()
            self._committing.popleft()
            del self._open[sid]
            yield stats

    def _settle(self) -> list[C]:
        """After a break: wait for every commit in flight; the ones that succeeded are committed, the rest stay
        uncommitted (redone)."""
        done: list[C] = []
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

    def serve(self, feed: ShardFeed, on_commit: Callable[[C], None]) -> None:
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

    def run(self, shards: Iterable[Any]) -> Iterator[C]:
        self.meter.outstanding = 0  # a new stream: what a broken one held is gone with it
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


class LiveStream(Generic[C]):
    """One worker's streaming engine kept open across shards handed to it one call at a time: ``submit(spec,
    items)`` queues the shard and returns a future of what its commit returns (``run``: the same, waited for). The
    Ray actors' and multiprocess workers' concurrent calls use it, and so does the reward server (one HTTP request
    is one shard of one unit of work).

    When the stream breaks (the engine raised), what it held but had not committed is redone:

    - ``alone=False`` (batch stages): on a new stream, up to ``max_retries`` times in a row (a commit in between
      starts the count again); then, or at once for a ``CaprlError`` (an engine that is gone), every waiting call
      fails with it, and so does every later call.
    - ``alone=True`` (the reward server): each shard on a stream of its own, so a shard that breaks the engine fails
      only its own call; the live stream then goes on with what is queued."""

    def __init__(self, worker: Any, max_retries: int = 0, *, alone: bool = False):
        self.worker, self.max_retries, self.alone = worker, max_retries, alone
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.waiting: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.commits = 0
        self.redone_alone = 0  #: shards redone on a stream of their own after a break (``alone``)
        self._thread = threading.Thread(target=self._serve, name="caprl-live-stream", daemon=True)
        self._thread.start()

    def submit(self, spec: ShardSpec, items: list[Any]) -> Future:
        fut: Future = Future()
        fut.set_running_or_notify_cancel()  # a caller that stops waiting cannot cancel it under the stream's feet
        with self.lock:
            if self.error is not None:
                raise self.error
            self.waiting[spec.shard_id] = fut
            self.queue.put((spec, items))
        return fut

    def run(self, spec: ShardSpec, items: list[Any]) -> C:
        return self.submit(spec, items).result()

    def close(self, timeout: float = 30) -> None:
        """No more shards: returns once every queued shard is committed (or ``timeout`` passed)."""
        self.queue.put(ShardFeed.CLOSED)
        self._thread.join(timeout=timeout)

    def _committed(self, stats: C) -> None:
        self.commits += 1
        with self.lock:
            fut = self.waiting.pop(stats.shard_id, None)
        if fut is not None:
            fut.set_result(stats)

    def _fail(self, shard_ids: Iterable[int] | None, err: BaseException) -> None:
        """Fail the waiting calls of ``shard_ids`` (None: every one)."""
        with self.lock:
            if shard_ids is None:
                futs, self.waiting = list(self.waiting.values()), {}
            else:
                futs = [f for f in (self.waiting.pop(i, None) for i in shard_ids) if f is not None]
        for fut in futs:
            fut.set_exception(err)

    def _redo_alone(self, left: list[tuple[ShardSpec, list[Any]]]) -> None:
        for spec, items in left:
            self.redone_alone += 1
            try:
                for stats in self.worker.open_stream().run([(spec, items)]):
                    self._committed(stats)
            except Exception as exc:  # noqa: BLE001 - this shard breaks the engine: it alone fails
                self._fail([spec.shard_id], exc)

    def _serve(self) -> None:
        feed = ShardFeed(self.queue)
        attempt = 0
        while True:
            stream: ShardStream[C] | None = None
            committed = self.commits
            try:
                stream = self.worker.open_stream()
                stream.serve(feed, self._committed)
                return
            except BaseException as exc:  # noqa: BLE001 - whatever it is, the waiting calls must hear of it
                left = stream.uncommitted() if stream is not None else []
                left += list(feed.first)  # redo shards the broken stream had not taken yet
                names = ", ".join(spec.name for spec, _ in left) or "none"
                if self.alone and isinstance(exc, Exception):
                    log.warning("the stream failed (%r) with shard(s) %s open; redoing each on its own", exc, names)
                    self._redo_alone(left)
                    if not left:
                        time.sleep(0.1)  # an engine that fails with nothing in it: do not spin
                    feed = ShardFeed(self.queue)
                    continue
                attempt = next_attempt(attempt, self.commits > committed)
                if isinstance(exc, CaprlError) or attempt > self.max_retries or not isinstance(exc, Exception):
                    err = give_up(exc, names, attempt) if isinstance(exc, Exception) else exc
                    with self.lock:
                        self.error = err
                    self._fail(None, err)
                    return
                log.warning(
                    "the stream failed (%r) with shard(s) %s open; redoing them (%d/%d)",
                    exc,
                    names,
                    attempt,
                    self.max_retries,
                )
                feed = ShardFeed(self.queue, first=left)
