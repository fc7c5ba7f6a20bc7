"""Decoding in worker processes (``decode_map(processes=True)``, ``decode.processes``): the same rows in the same order as threads on real media, picklable loaders and
errors, an early close that neither waits nor leaves processes behind, and Ctrl-C handled by the parent alone."""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from caprl_kit.annotate.worker import load_item
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.stages import _loader
from caprl_kit.errors import MediaError
from caprl_kit.io.batching import Loaded
from caprl_kit.io.config import MediaConfig
from caprl_kit.io.decode import decode_map
from caprl_kit.io.readers import InputItem
from media_factory import make_image_bytes, make_video_bytes

MEDIA = MediaConfig(video_max_frames=8)


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3 s H.264 clip (libx264)."""
    path = tmp_path_factory.mktemp("h264") / "clip.mp4"
    path.write_bytes(make_video_bytes(n_frames=30, fps=10, size=(128, 96), codec="libx264"))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, h264: Path) -> list[InputItem]:
    """Good JPEGs, broken files (on disk and embedded) and the H.264 clip, interleaved."""
    d = tmp_path_factory.mktemp("mixed")
    items = []
    for i in range(6):
        p = d / f"photo_{i}.jpg"
        p.write_bytes(make_image_bytes(color=(40 * i, 90, 200), size=(320 + 32 * i, 240), fmt="JPEG", quality=90))
        items.append(InputItem(key=p.name, source=str(p)))
    (d / "corrupt.jpg").write_bytes(make_image_bytes(fmt="JPEG", size=(200, 150))[:300])
    (d / "empty.jpg").write_bytes(b"")
    items.insert(2, InputItem(key="corrupt.jpg", source=str(d / "corrupt.jpg")))
    items.insert(4, InputItem(key="clip.mp4", source=str(h264), media_type="video"))
    items.insert(5, InputItem(key="empty.jpg", source=str(d / "empty.jpg")))
    items.insert(7, InputItem(key="embedded-bad", data=b"not an image" * 20, extra={"row": 7}))
    items.append(InputItem(key="missing.mp4", source=str(d / "missing.mp4"), media_type="video"))
    return items


def summary(ld: Loaded) -> dict:
    """Everything a row is made of, comparable across threads and processes (pixels included)."""
    out: dict = {"key": ld.item.key, "extra": ld.item.extra, "raw": ld.raw}
    if ld.error is not None:
        assert isinstance(ld.error, MediaError)
        out["error"] = (ld.error.kind, ld.error.source, ld.error.reason, str(ld.error))
        return out
    m = ld.media
    frames = m.frames if hasattr(m, "frames") else [m.image]  # type: ignore[union-attr]
    out.update(type=type(m).__name__, size=(m.width, m.height), hash=m.content_hash, source=m.source,
               pixels=[(f.mode, f.size, f.tobytes()) for f in frames],
               timestamps=getattr(m, "timestamps", None), duration=getattr(m, "duration", None))
    return out


def test_processes_give_the_threads_results_in_order(mixed: list[InputItem]) -> None:
    load = functools.partial(load_item, media_cfg=MEDIA, keep_raw=True)
    threads = [summary(ld) for ld in decode_map(load, mixed, 2, ahead=3)]
    procs = [summary(ld) for ld in decode_map(load, mixed, 2, ahead=3, processes=True)]
    assert [s["key"] for s in procs] == [it.key for it in mixed]
    assert procs == threads
    kinds = {s["key"]: s["error"][0] for s in procs if "error" in s}
    assert kinds == {"corrupt.jpg": "failed_to_decode", "empty.jpg": "empty_file", "embedded-bad": "failed_to_decode",
                     "missing.mp4": "file_not_found"}
    by_key = {s["key"]: s for s in procs}
    assert by_key["embedded-bad"]["error"][1] == "embedded-bad"  # no source: the key names it, as with threads
    video = by_key["clip.mp4"]
    assert video["type"] == "VideoClip" and len(video["pixels"]) == 6 and len(video["timestamps"]) == 6
    assert by_key["photo_0.jpg"]["raw"] is not None  # keep_raw (output.embed_media) travels back too
    # curate's loader (no raw bytes) pickles as well and matches its thread results
    curate = _loader(CurateConfig.model_validate({"input": {"path": "x"}, "media": {"video_max_frames": 8}}))
    curate_procs = [summary(ld) for ld in decode_map(curate, mixed, 2, processes=True)]
    assert curate_procs == [summary(ld) for ld in decode_map(curate, mixed, 1)]
    assert all(s["raw"] is None for s in curate_procs)


def test_media_error_and_loaded_media_survive_pickling(mixed: list[InputItem]) -> None:
    err = pickle.loads(pickle.dumps(MediaError("no_frames", "s3://bucket/v.mp4", "no decodable frames")))
    assert type(err) is MediaError
    assert (err.kind, err.source, err.reason) == ("no_frames", "s3://bucket/v.mp4", "no decodable frames")
    assert str(err) == "no_frames: s3://bucket/v.mp4: no decodable frames"
    for item in mixed:  # InputItem, LoadedImage, VideoClip (PIL frames), Loaded with and without an error
        ld = load_item(item, MEDIA, keep_raw=True)
        again = pickle.loads(pickle.dumps(ld))
        assert again.item == item and summary(again) == summary(ld)


def test_an_unpicklable_loader_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="picklable"):
        next(decode_map(lambda i: i, range(3), 2, processes=True))


def test_early_close_returns_at_once_and_leaves_no_process(h264: Path) -> None:
    before = set(multiprocessing.active_children())
    items = [InputItem(key=f"v{i:02d}", source=str(h264), media_type="video") for i in range(40)]
    gen = decode_map(functools.partial(load_item, media_cfg=MEDIA, keep_raw=False), items, 2, processes=True)
    got = [next(gen), next(gen)]
    assert [ld.item.key for ld in got] == ["v00", "v01"] and all(ld.error is None for ld in got)
    started = set(multiprocessing.active_children()) - before
    assert 1 <= len(started) <= 2
    t0 = time.monotonic()
    gen.close()
    took = time.monotonic() - t0
    assert took < 2, f"closing waited {took:.1f}s"
    deadline = time.monotonic() + 15  # the running decodes (a fraction of a second each) finish, then they exit
    while time.monotonic() < deadline and any(p.is_alive() for p in started):
        time.sleep(0.1)
    assert not [p for p in started if p.is_alive()], "decode processes outlived the pool"
    assert not set(multiprocessing.active_children()) - before


def test_an_interrupted_pool_raises_nothing_in_its_own_thread() -> None:
    """Interrupting the decodes with items still queued (not yet sent to a process) and one running: the processes
    are terminated and no future is failed twice. Cancelling the queued futures from the caller left them in the
    pool's table, and its thread, failing every future of the table when it saw the processes end, raised
    InvalidStateError ('Exception in thread ...' under the CLI's 'interrupted' line after Ctrl-C)."""
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    before = set(multiprocessing.active_children())
    try:
        gen = decode_map(time.sleep, [0.0] + [30.0] * 20, workers=1, ahead=8, processes=True)
        assert next(gen) is None  # the first sleep is done: one 30 s decode runs, one waits in the call queue,
        time.sleep(0.3)  # and six are queued behind them
        started = set(multiprocessing.active_children()) - before
        assert started
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            gen.throw(KeyboardInterrupt)
        assert time.monotonic() - t0 < 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.is_alive() for p in started):
            time.sleep(0.05)
        assert not [p for p in started if p.is_alive()], "the running decode's process was not terminated"
        time.sleep(0.5)  # the pool's thread has seen the processes end and failed what was left
    finally:
        threading.excepthook = hook
    assert errors == []


def test_ctrl_c_to_the_process_group_is_handled_by_the_parent_alone(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the group: the decode processes ignore it, the parent gets one
    KeyboardInterrupt, cancels the queue and exits with one traceback (none from the children)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import signal, time
        from caprl_kit.io.decode import decode_map

        if __name__ == "__main__":
            signal.signal(signal.SIGINT, signal.default_int_handler)
            loaded = decode_map(time.sleep, [1.0] * 50, workers=2, ahead=6, processes=True)
            try:
                for _ in loaded:
                    print("decoded", flush=True)
                    time.sleep(0.2)
            finally:
                loaded.close()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # both processes are up and busy with the next items
        assert first.startswith("decoded"), first + proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert took < 5, f"exit took {took:.1f}s after Ctrl-C"
    assert err.strip().endswith("KeyboardInterrupt") and err.count("Traceback") == 1, err


def test_annotate_with_decode_processes_writes_the_thread_rows(tiny_models, mixed: list[InputItem],
                                                               tmp_path: Path) -> None:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run

    d = tmp_path / "in"
    d.mkdir()
    for it in mixed:
        if it.source and os.path.exists(it.source):
            shutil.copyfile(it.source, d / it.key)

    def annotate(out: Path, processes: bool):
        cfg = AnnotateConfig.model_validate({
            "input": {"path": str(d)},
            "backend": {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 3,
                        "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 6, "seed": 0}},
            "media": {"video_max_frames": 4},
            "sharding": {"shard_size": 4},
            "decode": {"workers": 2, "processes": processes},
            "output": {"embed_media": True},
            "output_dir": str(out),
        })
        report = run(cfg)
        cols = ["key", "source", "media_type", "status", "error_message", "caption", "captions", "completion_tokens",
                "width", "height", "n_frames", "frame_timestamps", "content_hash", "media_bytes"]
        return report, pl.read_parquet(str(out / "*.parquet")).select(cols).sort("key").to_dicts()

    t_report, t_rows = annotate(tmp_path / "threads", False)
    p_report, p_rows = annotate(tmp_path / "processes", True)
    assert p_rows == t_rows
    assert p_report.status_counts == t_report.status_counts == {"ok": 7, "failed_to_decode": 1, "empty_file": 1}
    video = next(r for r in p_rows if r["key"] == "clip.mp4")
    assert video["status"] == "ok" and video["n_frames"] == 4 and video["caption"]
