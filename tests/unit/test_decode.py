"""Background decoding: results in order, bounded look-ahead, and the first Ctrl-C ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from caprl_kit.io.decode import decode_map


def test_results_in_input_order_inline_and_threaded() -> None:
    def slow_square(i: int) -> int:
        time.sleep(0.01 * (i % 3))
        return i * i

    assert list(decode_map(slow_square, range(20), workers=0)) == [i * i for i in range(20)]
    assert list(decode_map(slow_square, range(20), workers=3)) == [i * i for i in range(20)]
    with pytest.raises(ZeroDivisionError):
        list(decode_map(lambda i: 1 // (i - 5), range(10), workers=2))


def test_look_ahead_is_bounded() -> None:
    started: list[int] = []
    gen = decode_map(started.append, range(100), workers=2, ahead=4)
    next(gen)
    time.sleep(0.2)
    assert len(started) <= 5  # the consumed item and at most `ahead` more, not the whole input
    gen.close()
    time.sleep(0.1)
    assert len(started) <= 5  # closing it does not drain the rest


def test_keyboard_interrupt_cancels_pending_decodes_without_waiting() -> None:
    """A real SIGINT while the consumer waits on a slow decode: KeyboardInterrupt at once, the queue dropped."""
    release = threading.Event()
    started: list[int] = []

    def slow(i: int) -> int:
        started.append(i)
        release.wait(20)
        return i

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in decode_map(slow, range(50), workers=2, ahead=10):
                pass
        waited = time.monotonic() - t0
    finally:
        timer.cancel()
        release.set()
    assert waited < 3, f"the interrupt waited {waited:.1f}s for running decodes"
    time.sleep(0.3)
    assert sorted(started) == [0, 1], "pending decodes ran after the interrupt"


def test_first_sigint_ends_a_process_that_is_decoding(tmp_path) -> None:
    """End to end in a real process shaped like the annotate worker (the consumer generates between pulls and
    closes the decoder in a ``finally``): one SIGINT, and the interpreter exits after the decodes already running
    (1 s each), not after the 40-odd still queued (over 20 s with ``pool.map`` in a ``with`` block), with one
    short KeyboardInterrupt traceback and a non-zero code."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import signal, time
        from caprl_kit.io.decode import decode_map

        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT

        def slow(i):
            time.sleep(1.0)
            return i

        loaded = decode_map(slow, range(50), workers=2, ahead=8)
        try:
            for i in loaded:
                print("decoded", i, flush=True)
                time.sleep(0.3)  # generation, outside the decoder
        finally:
            loaded.close()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a decode finished: the pool is busy with the next ones
        assert first.startswith("decoded"), first
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert took < 5, f"exit took {took:.1f}s after the first SIGINT"
    assert err.strip().endswith("KeyboardInterrupt") and err.count("Traceback") == 1
