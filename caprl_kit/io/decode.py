"""Background media decoding that stops on the first Ctrl-C.

``decode_map`` is ``ThreadPoolExecutor.map`` in input order, with two differences: it submits at most ``ahead``
items beyond the one being consumed (so a consumer that stops pulling leaves only a few decodes running), and
when it ends early (``KeyboardInterrupt``, an error, the consumer closing it) it cancels every pending decode and
does not wait for the running ones. A plain ``with ThreadPoolExecutor(...)`` waits for every submitted task on
the way out, so the first Ctrl-C seemed ignored while the rest of the shard was decoded.

``processes=True`` runs the same window on a ``ProcessPoolExecutor`` instead, for video: the parts of a video
decode outside FFmpeg (PyAV's frame loop, frame-to-PIL conversion) need the GIL, so when the engine's Python side
keeps the GIL busy in the same process, decode threads starve and so does a GPU captioner (docs/dataflow.md). The
worker processes are started with **spawn** (never fork: the parent may hold CUDA, a vLLM engine, threads), ignore
SIGINT (the parent alone handles Ctrl-C and cancels), and are started anew for each call, so each call pays an
interpreter start plus the imports ``fn`` needs (annotate and curate: once per shard). ``fn``, the items and the
results must then be picklable: a module-level function (or a ``functools.partial`` of one), not a lambda, a
closure or a bound method of an object that holds an engine; and a script calling it needs the
``if __name__ == "__main__":`` guard, as with any spawned process.

A decode that waits on something slow (a URL read: io/urls.py) asks ``cancelled()`` in short waits: it is true in
a decode thread once its ``decode_map`` ended early, so the thread stops at once and the interpreter's exit (which
joins every pool thread) is not held up by it. Decode processes still running when ``decode_map`` ends early are
terminated: they hold no state of the run, only the item they were decoding.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

START_METHOD = "spawn"  # never fork: the parent may hold CUDA, an engine's threads, locks held by other threads
_local = threading.local()


class Cancelled(Exception):
    """Raised by a wait (``io/urls.py``) in a decode thread whose ``decode_map`` ended early: nobody reads it."""


def cancelled() -> bool:
    """True in a decode thread whose ``decode_map`` has ended early (Ctrl-C, an error, the consumer closed it)."""
    event = getattr(_local, "cancel", None)
    return event is not None and event.is_set()


def _call(cancel: threading.Event, fn: Callable[[T], R], item: T) -> R:
    """``fn(item)`` in a decode thread, with ``cancelled()`` answering for this ``decode_map``."""
    _local.cancel = cancel
    try:
        return fn(item)
    finally:
        _local.cancel = None


def _stop_processes(pool: Executor) -> None:
    """Shut ``pool`` down at once, its pending decodes cancelled, and terminate its processes: a running decode (a URL
    that does not answer) would otherwise hold up the interpreter's exit, which waits for them. The pool's own
    thread cancels the pending futures (it forgets them as it does); a future cancelled from here would stay in its
    table, and the thread failing it when it sees the processes end raises ``InvalidStateError`` in that thread."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(OSError, ValueError):  # already gone, or closed
            proc.terminate()


def _result(fut: Future[R]) -> R:
    """``fut.result()`` in short waits: a SIGINT that the kernel delivered to another thread (tqdm's monitor, an
    HTTP client) only runs its handler when the main thread wakes, so an untimed wait could ignore Ctrl-C for as
    long as the running decode takes."""
    while True:
        try:
            return fut.result(timeout=0.1)
        except TimeoutError:
            continue


def _ignore_sigint() -> None:
    """Decode processes' initializer: a terminal's Ctrl-C reaches the whole process group, but only the parent
    should act on it (it cancels the pending decodes and shuts the pool down)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int, processes: bool, fn: Callable) -> Executor:
    if not processes:
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caprl-decode")
    try:
        pickle.dumps(fn)
    except Exception as exc:  # say so now, not as a PicklingError on the first result
        raise TypeError(
            f"decode_map(processes=True) needs a picklable fn (a module-level function or a "
            f"functools.partial of one), got {fn!r}: {exc}"
        ) from exc
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(START_METHOD), initializer=_ignore_sigint
    )


def decode_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, *, ahead: int | None = None, processes: bool = False
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on ``workers`` threads (0: inline), results in input order.

    ``ahead``: most items submitted but not yet consumed (default: ``2 * workers``).
    ``processes``: ``workers`` spawned processes instead of threads; ``fn``, items and results must pickle."""
    if workers <= 0:
        yield from map(fn, items)
        return
    limit = max(1, ahead if ahead is not None else 2 * workers)
    pool = _pool(workers, processes, fn)
    cancel = threading.Event()
    pending: deque[Future[R]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item) if processes else pool.submit(_call, cancel, fn, item))
            if len(pending) >= limit:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    except BaseException:  # KeyboardInterrupt, GeneratorExit, an error in fn: stop now, do not drain
        if processes:
            _stop_processes(pool)
        else:
            cancel.set()  # running decodes waiting on a URL stop at once (``cancelled()``)
            pool.shutdown(wait=False, cancel_futures=True)  # the ones not started are cancelled
        raise
    pool.shutdown(wait=True)
