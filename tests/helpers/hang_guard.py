"""Make a regression that would hang (a FIFO opened for reading blocks until a writer comes) fail instead."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import pytest

T = TypeVar("T")


def unblock_fifos(fifos: Iterable[Path]) -> None:
    """Open each FIFO for writing without blocking, then close it: a reader stuck in ``open`` gets EOF."""
    for fifo in fifos:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):  # ENXIO: nobody is reading, nothing to unblock
                raise


def finishes_within(seconds: float, fn: Callable[[], T], fifos: Iterable[Path] = ()) -> T:
    """``fn()`` in a thread; fails the test (after unblocking ``fifos``) if it has not returned in time."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed back to the test thread
            error.append(exc)

    t = threading.Thread(target=target, daemon=True, name="hang-guard")
    t.start()
    t.join(seconds)
    if t.is_alive():
        unblock_fifos(fifos)
        t.join(10)
        pytest.fail(f"did not finish within {seconds}s (a FIFO was probably opened for reading)")
    if error:
        raise error[0]
    return result[0]
