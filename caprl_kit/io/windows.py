"""Long videos captioned in windows: spans of ``seconds`` that tile the video (a last one shorter than ``min_last_s``
joins the one before it), each with its own sampled frames, so a 30-minute video gets as many frames per second of
video as a short clip instead of one frame budget for all of it.

``load_video_windows`` decodes every window's frames in one pass over the file (the sparse decoder seeks to each);
each window is a ``VideoClip`` whose timestamps start at 0 (the engine sees a short clip, whatever the back end
does with frame times), its span in ``meta["span"]``. ``shift_timestamps`` moves a window caption's ``[mm:ss]`` /
``[mm:ss - mm:ss]`` stamps (the timestamped prompt's format, ``rewards/timestamp_format.py``) by the window's start,
and ``merge_captions`` joins the windows' captions into one caption with absolute timestamps.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caprl_kit.io.media import (
    MAX_FILE_BYTES,
    VideoClip,
    _probe_duration,
    describe,
    read_bytes,
    resample,
    sample_times,
    smart_resize,
    to_rgb,
)


@dataclass
class WindowedVideo:
    """A video cut into windows: one ``VideoClip`` per span, in order."""

    windows: list[VideoClip]
    duration: float
    source: str
    content_hash: str

    @property
    def spans(self) -> list[tuple[float, float]]:
        return [w.meta["span"] for w in self.windows]

    @property
    def width(self) -> int:
        return self.windows[0].width

    @property
    def height(self) -> int:
        return self.windows[0].height


def window_spans(duration: float, seconds: float, min_last_s: float | None = None) -> list[tuple[float, float]]:
    """Consecutive ``(start, end)`` spans of ``seconds`` covering ``[0, duration]``; a last span shorter than
    ``min_last_s`` (default: half a window) joins the one before it. A video no longer than a window is one span."""
    min_last = seconds / 2 if min_last_s is None else min_last_s
    starts = []
    t = 0.0
    while t < duration - 1e-9:
        starts.append(t)
        t += seconds
    if not starts:
        return [(0.0, duration)]
    if len(starts) > 1 and duration - starts[-1] < min_last:
        starts.pop()
    ends = [*starts[1:], duration]
    return [(round(a, 3), round(b, 3)) for a, b in zip(starts, ends)]


def load_video_windows(
    src: str | Path | bytes,
    *,
    seconds: float,
    min_last_s: float | None = None,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 32,
    max_pixels: int = 200704,
    min_pixels: int = 3136,
    max_bytes: int = MAX_FILE_BYTES,
    decoder: str = "auto",
    keyframe_snap_s: float = 0.0,
) -> WindowedVideo:
    """Decode a video's windows with PyAV: each window's frames sampled by ``fps`` within its span (count in
    [min_frames, max_frames] per window), all of them in one decoding pass. ``keyframe_snap_s``: an instant moves
    to a keyframe within that many seconds and inside its window (``video_decode.snap``). Raises ``MediaError``."""
    from caprl_kit.io.video_decode import decode_at, snap_limits

    source = describe(src)
    data = read_bytes(src, max_bytes)
    duration = _probe_duration(data, source)
    spans = window_spans(duration, seconds, min_last_s)
    per_window = [[start + t for t in sample_times(end - start, fps, min_frames, max_frames)] for start, end in spans]
    limits = [lim for (start, end), times in zip(spans, per_window) for lim in snap_limits(times, start, end)]
    got = decode_at(data, source, [t for times in per_window for t in times], decoder, keyframe_snap_s, limits)
    h, w = smart_resize(got.images[0].height, got.images[0].width, min_pixels=min_pixels, max_pixels=max_pixels)
    windows, i = [], 0
    for (start, end), times in zip(spans, per_window):
        frames = [resample(to_rgb(f), (w, h)) for f in got.images[i : i + len(times)]]
        stamps = [round(t - start, 3) for t in got.timestamps[i : i + len(times)]]
        i += len(times)
        windows.append(
            VideoClip(
                frames=frames,
                timestamps=stamps,
                duration=round(end - start, 3),
                source=f"{source} [{start:.1f}-{end:.1f} s]",
                sample_fps=len(frames) / max(end - start, 1e-9),
                meta={"span": (start, end), "decoder": got.decoder},
            )
        )
    return WindowedVideo(windows, round(duration, 3), source, hashlib.sha256(data).hexdigest())


def _stamp(seconds: int) -> str:
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def shift_timestamps(text: str, offset_s: float) -> str:
    """``text`` with every ``[mm:ss]`` / ``[mm:ss - mm:ss]`` moved ``offset_s`` seconds later (whole seconds)."""
    from caprl_kit.rewards.timestamp_format import TIMESTAMP_RE  # the timestamped prompt's format

    offset = round(offset_s)
    if not offset:
        return text

    def moved(m: re.Match[str]) -> str:
        g = m.groups()
        a = _stamp(int(g[0]) * 60 + int(g[1]) + offset)
        if g[2] is None:
            return f"[{a}]"
        return f"[{a} - {_stamp(int(g[2]) * 60 + int(g[3]) + offset)}]"

    return TIMESTAMP_RE.sub(moved, text)


def merge_captions(captions: list[str], spans: list[tuple[float, float]]) -> str:
    """The windows' captions in order, each with its timestamps made absolute, one paragraph per window."""
    return "\n\n".join(shift_timestamps(c.strip(), start) for c, (start, _) in zip(captions, spans))


def load_windows_media(
    source: str | None, data: bytes | None, cfg: Any, seconds: float, min_last_s: float | None, wire: Any = None
) -> tuple[WindowedVideo, bytes]:
    """``load_media`` for a video captioned in windows: (the windows, the encoded bytes) with ``MediaConfig``
    settings per window; frames in the back end's wire form when it has one. Raises ``MediaError`` naming the
    source."""
    from caprl_kit.errors import MediaError
    from caprl_kit.io.media import jpeg_base64, url_limits

    label = source or describe(data)
    cap = cfg.max_file_bytes
    try:
        raw = read_bytes(data if data is not None else source, cap, url_limits(cfg))  # type: ignore[arg-type]  # one of data and source is given
        video = load_video_windows(
            raw,
            seconds=seconds,
            min_last_s=min_last_s,
            fps=cfg.video_fps,
            min_frames=cfg.video_min_frames,
            max_frames=cfg.video_max_frames,
            max_pixels=cfg.video_max_pixels,
            max_bytes=cap,
            decoder=cfg.video_decoder,
            keyframe_snap_s=cfg.video_keyframe_snap_s,
        )
    except MediaError as exc:
        raise MediaError(exc.kind, label, exc.reason) from None
    if wire is not None and wire.frame_quality is not None:
        for clip in video.windows:
            clip.encoded_frames = [jpeg_base64(f, wire.frame_quality) for f in clip.frames]
    video.source = label
    return video, raw
