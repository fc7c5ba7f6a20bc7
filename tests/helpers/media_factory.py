"""Generate real images and videos (and broken variants) for tests and demos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def make_image(color=(255, 0, 0), size=(96, 64), mode="RGB") -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    arr = np.asarray(img).copy()
    w, h = size
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = color
    img = Image.fromarray(arr)
    return img.convert(mode) if mode != "RGB" else img


def make_image_bytes(color=(255, 0, 0), size=(96, 64), fmt="PNG", mode="RGB", **save_kw) -> bytes:
    buf = io.BytesIO()
    make_image(color, size, mode).save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def make_video_bytes(n_frames=30, fps=10, size=(64, 48), fmt="mp4", codec="mpeg4") -> bytes:
    import av

    buf = io.BytesIO()
    container = av.open(buf, "w", format=fmt)
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for i in range(n_frames):
        arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        arr[:, : (i * size[0]) // max(n_frames, 1) + 1] = (255, 64, 0)  # a bar growing left to right
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


def _moving_frame(i: int, n_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i`` of a test video: a background whose brightness steps with ``i``, a bar growing left to right and
    a square moving down, so any two frames differ clearly."""
    w, h = size
    arr = np.full((h, w, 3), (i * 37) % 160 + 40, dtype=np.uint8)
    arr[: h // 4, : (i * w) // max(n_frames, 1) + 1] = (255, 64, 0)
    side = max(4, min(w, h) // 4)
    y = (i * 3) % max(1, h - side)
    arr[y : y + side, w // 2 : w // 2 + side] = (0, 200, 255)
    return arr


def make_h264_video_bytes(
    n_frames=60,
    fps=30,
    size=(96, 64),
    fmt="mp4",
    gop=None,
    bframes=0,
    vfr=False,
    rotation=0,
    audio_first=False,
    faststart=False,
    preset="ultrafast",
    open_gop=False,
    codec="libx264",
) -> bytes:
    """An H.264 video (libx264) with the awkward properties the video decoders are tested on.

    ``gop``: frames per keyframe interval (``1``: every frame a keyframe); ``bframes``: B-frames between
    references (decode order differs from presentation order); ``vfr``: variable frame rate (frame durations
    alternate between short and long ones on a millisecond time base); ``rotation``: a display matrix turning the
    frames this many degrees counterclockwise; ``audio_first``: a silent AAC track added before the video stream,
    so the video is stream 1 and the file starts with audio packets; ``fmt``: ``mp4``, ``matroska``, ``mpegts``
    (seeking by timestamps without an index) or ``h264`` (a raw stream without timestamps); ``faststart``: mp4 with
    its index at the front (so a damaged tail leaves the index readable); ``open_gop``: keyframes that are not IDR,
    with B-frames after them in decode order that are shown before them and predicted from the GOP before
    (leading pictures); ``codec``: ``libx264`` or ``libx265`` (HEVC, whose decoder does not skip non-reference
    frames)."""
    import av

    if faststart:  # moving the index to the front rereads the file: FFmpeg needs a real one
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/video.mp4"
            with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as container:
                _write_h264(
                    container, n_frames, fps, size, gop, bframes, vfr, rotation, audio_first, preset, open_gop, codec
                )
            with open(path, "rb") as fh:
                return fh.read()
    buf = io.BytesIO()
    container = av.open(buf, "w", format=fmt)
    _write_h264(container, n_frames, fps, size, gop, bframes, vfr, rotation, audio_first, preset, open_gop, codec)
    container.close()
    return buf.getvalue()


def _write_h264(
    container, n_frames, fps, size, gop, bframes, vfr, rotation, audio_first, preset, open_gop, codec
) -> None:
    from fractions import Fraction

    import av

    audio = None
    if audio_first:
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
    # keyframes exactly every ``gop`` frames: no scene-cut keyframes (every frame here changes brightness)
    opts = {"preset": preset, "bf": str(bframes), "g": str(gop or 2 * fps), "sc_threshold": "0"}
    if open_gop:
        opts["x264-params"] = f"open-gop=1:b-adapt=0:bframes={bframes}"
    if codec == "libx265":
        opts["x265-params"] = f"scenecut=0:log-level=error:bframes={bframes}:keyint={gop or 2 * fps}"
    stream = container.add_stream(codec, rate=fps, options=opts)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if vfr:
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
    if rotation:
        stream.set_display_rotation(rotation)
    pts = 0
    audio_pts = 0
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(_moving_frame(i, n_frames, size), format="rgb24")
        if vfr:
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 20 if i % 3 else 70
        if audio is not None:  # audio up to this frame's end, muxed before it
            until = round((pts / 1000 if vfr else (i + 1) / fps) * 16000)
            while audio_pts < until:
                samples = np.zeros((1, 1024), dtype=np.float32)
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, audio_pts
                audio_pts += 1024
                for packet in audio.encode(chunk):
                    container.mux(packet)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    if audio is not None:
        for packet in audio.encode():
            container.mux(packet)


def damage_tail(data: bytes, keep: float = 0.7, truncate: bool = False, seed: int = 0) -> bytes:
    """``data`` with everything after its first ``keep`` share cut off (``truncate``) or overwritten with random
    bytes (the length kept)."""
    cut = int(len(data) * keep)
    if truncate:
        return data[:cut]
    rng = np.random.default_rng(seed)
    return data[:cut] + rng.integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
