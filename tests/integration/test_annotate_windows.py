"""Long videos captioned in windows (``video_windows``): spans that tile the video, each window's own frames and
request through the real openai back end (a scripted server on 127.0.0.1 that states timestamps from the window's
start), the merged caption with absolute timestamps, and a run whose server dies mid-way resumed with every video
exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.errors import EngineDown
from caprl_kit.io.windows import load_video_windows, merge_captions, shift_timestamps, window_spans
from caprl_kit.rewards.timestamp_format import timestamp_format_score
from chat_server import ChatServer
from media_factory import make_video_bytes

WINDOW_CAPTION = "[00:05] An orange bar grows from the left. [00:40 - 00:50] It keeps growing to the right."


@pytest.mark.parametrize("duration, seconds, min_last, spans", [
    (180.0, 60.0, None, [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0)]),
    (190.0, 60.0, None, [(0.0, 60.0), (60.0, 120.0), (120.0, 190.0)]),  # a 10 s tail joins the last window
    (210.0, 60.0, None, [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0), (180.0, 210.0)]),  # a half window stays
    (190.0, 60.0, 5.0, [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0), (180.0, 190.0)]),
    (20.0, 60.0, None, [(0.0, 20.0)]),
])
def test_windows_tile_the_video(duration: float, seconds: float, min_last: float | None, spans: list) -> None:
    got = window_spans(duration, seconds, min_last)
    assert got == spans
    assert got[0][0] == 0.0 and got[-1][1] == duration and all(a[1] == b[0] for a, b in zip(got, got[1:]))


def test_timestamps_move_by_the_window_start_and_stay_well_formed() -> None:
    assert shift_timestamps(WINDOW_CAPTION, 120) == (
        "[02:05] An orange bar grows from the left. [02:40 - 02:50] It keeps growing to the right.")
    assert shift_timestamps("[59:30] late.", 45.4) == "[60:15] late."
    merged = merge_captions([WINDOW_CAPTION] * 3, [(0, 60), (60, 120), (120, 180)])
    assert merged.count("\n\n") == 2 and "[01:05]" in merged and "[02:40 - 02:50]" in merged
    assert timestamp_format_score(merged) == timestamp_format_score(WINDOW_CAPTION) == 1.0  # still in order, valid


def test_each_window_gets_its_own_frames_from_one_decoding_pass() -> None:
    video = load_video_windows(make_video_bytes(n_frames=360, fps=2, size=(32, 24)), seconds=60.0, fps=0.1,
                               min_frames=2, max_frames=8)
    assert video.spans == [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0)] and video.duration == 180.0
    for clip in video.windows:
        assert len(clip.frames) == 6 and clip.timestamps[0] >= 0 and clip.timestamps[-1] < 60  # from the window start
    # later windows show more of the growing bar: the frames are the window's own
    orange = [sum(px[0] > 128 for px in clip.frames[0].getdata()) for clip in video.windows]
    assert orange[0] < orange[1] < orange[2]


def test_snapped_window_frames_are_keyframes_inside_their_window() -> None:
    """``media.video_keyframe_snap_s``: a window's instants move to keyframes (this MPEG-4 stream has one every 6
    s) without leaving the window, and the frames keep their own times from the window start."""
    data = make_video_bytes(n_frames=360, fps=2, size=(32, 24))
    exact = load_video_windows(data, seconds=60.0, fps=0.1, min_frames=2, max_frames=8)
    snapped = load_video_windows(data, seconds=60.0, fps=0.1, min_frames=2, max_frames=8, keyframe_snap_s=30.0)
    for a, b in zip(exact.windows, snapped.windows):
        assert a.timestamps == [5.0, 15.0, 25.0, 35.0, 45.0, 55.0]
        assert all(t % 6 == 0 and 0 <= t < 60 for t in b.timestamps)
        assert len(set(b.timestamps)) == len(b.timestamps) == 6  # distinct: no two instants share a keyframe
        assert all(abs(s - t) <= 5.0 for s, t in zip(a.timestamps, b.timestamps))


def _videos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"clip_{i}.mp4").write_bytes(make_video_bytes(n_frames=360, fps=2, size=(32, 24)))
    return folder


def _config(inp: Path, out: Path, url: str, **extra: Any) -> AnnotateConfig:
    return AnnotateConfig.model_validate({
        "input": {"path": str(inp)},
        "backend": {"name": "openai", "model": "scripted", "sampling": {"n": 2},
                    "openai": {"base_url": url, "max_concurrency": 2, "max_retries": 1, "backoff_base_s": 0.02,
                               "backoff_max_s": 0.05, "timeout_s": 10}},
        "media": {"video_fps": 0.1, "video_min_frames": 2, "video_max_frames": 8},
        "video_windows": {"seconds": 60},
        "sharding": {"shard_size": 1},
        "runner": {"max_shard_retries": 1},
        "output_dir": str(out),
        **extra,
    })


def _rows(out: Path) -> list[dict]:
    return pl.read_parquet(str(out / "*.parquet")).sort("key").to_dicts()


def test_a_three_minute_video_is_captioned_in_windows_and_merged(tmp_path: Path) -> None:
    inp = _videos(tmp_path / "in", 1)
    with ChatServer(replies=[(WINDOW_CAPTION, "stop")]) as server:
        report = run(_config(inp, tmp_path / "out", server.base_url))
    assert len(server.bodies) == 3  # one request per window
    assert all(sum(p.get("type") == "image_url" for m in b["messages"] if isinstance(m["content"], list)
                   for p in m["content"]) == 6 for b in server.bodies)  # each with its window's 6 frames
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "ok" and report.n_ok == 1
    windows = row["windows"]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0)]
    assert all(w["captions"] == [WINDOW_CAPTION] * 2 and w["n_frames"] == 6 for w in windows)
    assert len(row["captions"]) == 2 and row["caption"] == row["captions"][0]
    for start, paragraph in zip((0, 60, 120), row["caption"].split("\n\n")):
        assert paragraph == shift_timestamps(WINDOW_CAPTION, start)
    assert "[02:05]" in row["caption"] and "[01:40 - 01:50]" in row["caption"]
    assert row["n_frames"] == 18 and len(row["frame_timestamps"]) == 18
    assert row["frame_timestamps"] == sorted(row["frame_timestamps"]) and row["frame_timestamps"][-1] < 180


def test_a_server_that_dies_mid_video_resumes_with_every_video_once(tmp_path: Path) -> None:
    inp = _videos(tmp_path / "in", 3)
    out = tmp_path / "out"
    with ChatServer(replies=[(WINDOW_CAPTION, "stop")], die_after=4) as server:  # the second video's 1st window
        with pytest.raises(EngineDown):
            run(_config(inp, out, server.base_url))
        port = server.port
    assert len(list(out.glob("*_stats.json"))) == 1, "only the video whose windows were all answered is committed"
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("00000*")}
    time.sleep(0.01)
    with ChatServer(replies=[(WINDOW_CAPTION, "stop")], port=port) as server:
        report = run(_config(inp, out, f"http://127.0.0.1:{port}/v1"))
    assert len(server.bodies) == 6  # the two missing videos' windows, nothing else
    rows = _rows(out)
    assert [r["key"] for r in rows] == [f"clip_{i}.mp4" for i in range(3)] and report.shards_skipped == 1
    assert all(r["status"] == "ok" and len(r["windows"]) == 3 for r in rows)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("00000*")} == kept


def test_annotate_snaps_window_frames_to_keyframes_when_asked(tmp_path: Path) -> None:
    """``media.video_keyframe_snap_s`` on an annotate run: the frames sent and recorded are keyframes (every 6 s in
    this stream) inside their windows, with their own absolute times."""
    inp = _videos(tmp_path / "in", 1)
    media = {"video_fps": 0.1, "video_min_frames": 2, "video_max_frames": 8, "video_keyframe_snap_s": 30.0}
    with ChatServer(replies=[(WINDOW_CAPTION, "stop")]) as server:
        cfg = _config(inp, tmp_path / "out", server.base_url, media=media)
        run(cfg)
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "ok" and row["n_frames"] == 18
    stamps = row["frame_timestamps"]
    assert all(t % 6 == 0 for t in stamps) and len(set(stamps)) == 18
    for w in row["windows"]:
        inside = [t for t in stamps if w["start_s"] <= t < w["end_s"]]
        assert len(inside) == w["n_frames"] == 6
