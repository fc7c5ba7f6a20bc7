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
