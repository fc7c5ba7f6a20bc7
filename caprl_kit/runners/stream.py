"""The streaming stage engine: the work of every shard flows through one back-end stream.

A stage says, per shard, which units of work it has (``Work``: the requests one output row needs and how the row
comes from their responses) and how a finished shard is committed. ``ShardStream`` feeds all of it to
``backend.stream`` as one continuous stream, so the engine stays full across batch and shard boundaries, gathers
the responses by request id, and commits each shard (atomically, stats last) the moment its last response
arrives, while the next shards are already in the engine. Memory is bounded by the back end's ``in_flight`` and
the stage's own decode look-ahead, not by the shard size.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from caprl_kit.backends.base import Request, Response, check_engine_up
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import utc_now
from caprl_kit.schemas.run import ShardStats

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

    #: says what the engine was doing when every request of a shard failed (``check_engine_up``)
    engine_label: str

    def plan(self, spec: ShardSpec, items: list[Any]) -> Iterable[Work]:
        """The shard's work in output order, produced lazily (it may decode media as it goes)."""
        ...

    def commit(self, spec: ShardSpec, items: list[Any], rows: list[Row], responses: Sequence[Response],
               opened: tuple[str, float]) -> ShardStats:
        """Write the shard's rows (atomically, stats last) and return its stats (``StatsBuilder(opened=...)``)."""
        ...


def _no_engine(requests: Iterator[Request]) -> Iterator[Response]:
    """A stage without an engine (curate's import modes): planning alone makes every row."""
    for request in requests:
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


class ShardStream:
    """``for stats in ShardStream(stage, backend).run(shards)``: shards committed in the order they complete."""

    def __init__(self, stage: StreamStage, backend: Any, **stream_options: Any):
        self.stage, self.backend, self.options = stage, backend, stream_options
        self._open: dict[int, _Open] = {}
        self._ready: deque[int] = deque()

    def uncommitted(self) -> list[tuple[ShardSpec, list[Any]]]:
        """Shards taken from the input but not committed (to redo after a failure), in input order."""
        return [(sh.spec, sh.items) for _, sh in sorted(self._open.items())]

    def _requests(self, shards: Iterable[tuple[ShardSpec, list[Any]]]) -> Iterator[Request]:
        for spec, items in shards:
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
                self._ready.append(spec.shard_id)

    def _take(self, resp: Response) -> None:
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
                self._ready.append(sid)

    def _commit(self, sid: int) -> ShardStats:
        sh = self._open[sid]
        check_engine_up(sh.responses, self.stage.engine_label)
        rows = [row for work in sh.works for row in (work.rows or [])]
        stats = self.stage.commit(sh.spec, sh.items, rows, sh.responses, sh.opened)
        del self._open[sid]
        return stats

    def run(self, shards: Iterable[tuple[ShardSpec, list[Any]]]) -> Iterator[ShardStats]:
        responses = self.backend.stream(self._requests(shards), **self.options) if self.backend is not None \
            else _no_engine(self._requests(shards))
        for resp in responses:
            self._take(resp)
            while self._ready:
                yield self._commit(self._ready.popleft())
        while self._ready:
            yield self._commit(self._ready.popleft())
        if self._open:  # a back end that lost a response: the shards are redone, never committed short
            names = ", ".join(sh.spec.name for sh in self._open.values())
            raise RuntimeError(f"the engine's stream ended without answering every request of shard(s) {names}")
