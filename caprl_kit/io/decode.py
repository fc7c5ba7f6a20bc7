"""Background media decoding that stops on the first Ctrl-C.

``decode_map`` is ``ThreadPoolExecutor.map`` in input order, with two differences: it submits at most ``ahead``
items beyond the one being consumed (so a consumer that stops pulling leaves only a few decodes running), and
when it ends early (``KeyboardInterrupt``, an error, the consumer closing it) it cancels every pending decode and
does not wait for the running ones. A plain ``with ThreadPoolExecutor(...)`` waits for every submitted task on
the way out, so the first Ctrl-C seemed ignored while the rest of the shard was decoded.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generator, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _result(fut: "Future[R]") -> R:
    """``fut.result()`` in short waits: a SIGINT that the kernel delivered to another thread (tqdm's monitor, an
    HTTP client) only runs its handler when the main thread wakes, so an untimed wait could ignore Ctrl-C for as
    long as the running decode takes."""
    while True:
        try:
            return fut.result(timeout=0.1)
        except TimeoutError:
            continue


def decode_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, *, ahead: int | None = None
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on ``workers`` threads (0: inline), results in input order.

    ``ahead``: most items submitted but not yet consumed (default: ``2 * workers``)."""
    if workers <= 0:
        yield from map(fn, items)
        return
    limit = max(1, ahead if ahead is not None else 2 * workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caprl-decode")
    pending: deque[Future[R]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= limit:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    except BaseException:  # KeyboardInterrupt, GeneratorExit, an error in fn: stop now, do not drain
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
