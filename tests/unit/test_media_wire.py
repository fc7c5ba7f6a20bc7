"""Images in a back end's wire form (``io.media.wire_image``), the fast resize and the JPEG draft decode: a file the
server can read as it is goes as its own bytes; any other is decoded, turned upright, composited, resized and
encoded here; the pixels match Pillow's bicubic closely; ``caprl annotate`` against a real HTTP server sends what it
says and records which in the shard's stats."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from chat_server import ChatServer
from media_factory import make_image_bytes
from PIL import Image

from caprl_kit.errors import MediaError
from caprl_kit.io.media import ImageWire, load_image, resample, smart_resize, wire_image


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like array: smooth gradients with mild noise (real decode work, detail to alias)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([np.sin(7 * x + seed), np.cos(5 * y), np.sin(11 * (x + y))], -1) * 110 + 128
    return (arr + rng.normal(0, 6, arr.shape)).clip(0, 255).astype(np.uint8)


def encoded(arr: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def url_bytes(url: str) -> tuple[str, bytes]:
    head, _, data = url.partition(",")
    return head, base64.b64decode(data)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


@pytest.mark.parametrize("size, target", [((1024, 1024), (980, 980)), ((1632, 1224), (1148, 840)),
                                          ((4000, 3000), (1148, 840)), ((200, 150), (420, 308))])
def test_resample_matches_pillows_bicubic(size, target) -> None:
    img = Image.fromarray(photo(*size))
    ours = resample(img, target)
    assert ours.size == target and ours.mode == "RGB"
    assert mean_abs_diff(ours, img.resize(target, Image.Resampling.BICUBIC)) < 2.5


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_matches_a_full_decode() -> None:
    data = encoded(photo(4000, 3000), quality=92)
    loaded = load_image(data)
    h, w = smart_resize(3000, 4000)
    assert (loaded.width, loaded.height) == (w, h) == loaded.pixels.size
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    assert mean_abs_diff(loaded.pixels, full) < 3.0


@pytest.mark.parametrize("fmt, mode, mime", [("JPEG", "RGB", "image/jpeg"), ("PNG", "RGB", "image/png"),
                                             ("PNG", "L", "image/png"), ("WEBP", "RGB", "image/webp")])
def test_a_file_the_server_reads_as_it_is_goes_as_its_own_bytes(fmt, mode, mime) -> None:
    data = make_image_bytes(color=(40, 120, 200), size=(1600, 1200), fmt=fmt, mode=mode)
    got = wire_image(data, ImageWire("JPEG", originals=True), max_pixels=1003520)
    assert got.encoded is not None and got.encoded.sent == "original" and got.image is None
    head, sent = url_bytes(got.encoded.url)
    assert head == f"data:{mime};base64" and sent == data
    assert (got.width, got.height) == (1600, 1200)  # what the server receives; it resizes
    assert got.content_hash == hashlib.sha256(data).hexdigest()


def _exif_rotated_jpeg() -> bytes:
    img = Image.fromarray(photo(1600, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _transparent_png() -> bytes:
    arr = np.zeros((64, 96, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red, fully transparent but for a band on top
    arr[:8, :, 3] = 255
    return encoded(arr, "PNG")


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, data, size", [
    ("exif-rotated JPEG", _exif_rotated_jpeg(), smart_resize(1600, 1200)[::-1]),  # upright: 1200 wide, 1600 high
    ("RGBA PNG", _transparent_png(), (84, 56)),
    ("CMYK JPEG", make_image_bytes(color=(0, 200, 100), size=(96, 64), fmt="JPEG", mode="CMYK"), (84, 56)),
    ("16-bit PNG", _png16(), (56, 56)),
    ("GIF", make_image_bytes(color=(0, 200, 100), size=(96, 64), fmt="GIF"), (84, 56)),
])
def test_any_other_image_is_decoded_upright_resized_and_encoded_here(name, data, size) -> None:
    got = wire_image(data, ImageWire("JPEG", originals=True), max_pixels=1003520)
    assert got.encoded is not None and got.encoded.sent == "encoded", name
    head, sent = url_bytes(got.encoded.url)
    assert head == "data:image/jpeg;base64"
    img = Image.open(io.BytesIO(sent))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == tuple(size) == (got.width, got.height), name
    if name == "RGBA PNG":  # a transparent pixel is composited on white, not sent black
        assert min(img.getpixel((40, 30))) > 240


def test_without_originals_every_image_is_resized_and_encoded_in_the_wire_format() -> None:
    data = encoded(photo(1632, 1224), quality=90)
    for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        got = wire_image(data, ImageWire(fmt, originals=False), max_pixels=1003520)
        assert got.encoded is not None and got.encoded.sent == "encoded"
        head, sent = url_bytes(got.encoded.url)
        assert head == f"data:{mime};base64" and Image.open(io.BytesIO(sent)).size == (1148, 840)


def test_the_decompression_bomb_guard_holds_for_originals_too() -> None:
    data = make_image_bytes(size=(400, 300), fmt="JPEG")
    with pytest.raises(MediaError) as err:
        wire_image(data, ImageWire("JPEG", originals=True), max_image_pixels=100_000)
    assert err.value.kind == "too_large"


@pytest.mark.slow
@pytest.mark.parametrize("image_resize", ["client", "server"])
def test_annotate_sends_originals_when_the_server_resizes_and_records_it(tmp_path: Path, image_resize) -> None:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run
    from caprl_kit.io.rundir import RunDir
    from caprl_kit.schemas.annotation import AnnotationRow

    inp = tmp_path / "in"
    inp.mkdir()
    files = {"photo.jpg": encoded(photo(1632, 1224), quality=90), "rotated.jpg": _exif_rotated_jpeg(),
             "alpha.png": _transparent_png()}
    for name, data in files.items():
        (inp / name).write_bytes(data)
    with ChatServer() as server:
        report = run(AnnotateConfig.model_validate({
            "input": {"path": str(inp)}, "output_dir": str(tmp_path / "out"),
            "backend": {"name": "openai", "model": "scripted",
                        "openai": {"base_url": server.base_url, "image_resize": image_resize}}}))
    assert report.n_ok == 3
    sent = {}
    for body in server.bodies:
        part = next(p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]
                    if p["type"] == "image_url")
        sent[len(sent)] = url_bytes(part["image_url"]["url"])[1]
    originals = sum(data in files.values() for data in sent.values())
    rows = {r["key"]: r for r in RunDir(str(tmp_path / "out"), AnnotationRow).read_table().to_pylist()}
    (stats,) = RunDir(str(tmp_path / "out"), AnnotationRow).read_stats()
    if image_resize == "server":
        assert originals == 1  # the upright RGB JPEG; the rotated one and the RGBA PNG are made upright / opaque
        assert (rows["photo.jpg"]["width"], rows["photo.jpg"]["height"]) == (1632, 1224)
        assert stats.metrics == pytest.approx({**stats.metrics, "images_sent_original": 1, "images_sent_encoded": 2})
    else:
        assert originals == 0
        assert (rows["photo.jpg"]["width"], rows["photo.jpg"]["height"]) == (1148, 840)
        assert stats.metrics.get("images_sent_encoded") == 3 and "images_sent_original" not in stats.metrics
    upright = smart_resize(1600, 1200)[::-1]  # stored 1600x1200 with EXIF Orientation 6: 1200 wide, 1600 high
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == upright


@pytest.mark.parametrize("video_as, quality", [("frames", 95), ("jpeg_sequence", 75)])
def test_a_videos_frames_are_encoded_in_the_decode_worker_as_the_back_end_would(video_as, quality) -> None:
    from media_factory import make_video_bytes

    from caprl_kit.backends.base import Request
    from caprl_kit.backends.config import BackendConfig
    from caprl_kit.backends.openai_http import OpenAIBackend
    from caprl_kit.io.config import MediaConfig
    from caprl_kit.io.media import load_media

    backend = OpenAIBackend(BackendConfig.model_validate(
        {"name": "openai", "model": "m", "openai": {"base_url": "http://127.0.0.1:9/v1", "video_as": video_as}}))
    assert backend.image_wire.frame_quality == quality
    data = make_video_bytes(n_frames=20, fps=10)
    wired, _ = load_media(None, data, "video", MediaConfig(video_max_frames=4), backend.image_wire)
    plain, _ = load_media(None, data, "video", MediaConfig(video_max_frames=4))
    assert wired.encoded_frames is not None and len(wired.encoded_frames) == len(wired.frames) == 4
    assert plain.encoded_frames is None
    sent = [backend.payload(Request.user("describe", videos=[clip]))["messages"][0]["content"] for clip in (wired,
                                                                                                          plain)]
    assert sent[0] == sent[1]  # the same parts, whether the worker or the payload encoded them
    urls = [p.get("image_url", p.get("video_url"))["url"] for p in sent[0] if p["type"] != "text"]
    assert len(urls) == (4 if video_as == "frames" else 1)


@pytest.mark.parametrize("size", [(1632, 1224), (4000, 3000), (200, 150)])
def test_a_plain_jpeg_resized_in_opencv_matches_the_pillow_path(size) -> None:
    data = encoded(photo(*size), quality=90)
    got = wire_image(data, ImageWire("JPEG"), max_pixels=1003520)
    assert got.encoded is not None and got.encoded.sent == "encoded"
    sent = Image.open(io.BytesIO(url_bytes(got.encoded.url)[1]))
    reference = load_image(data, max_pixels=1003520).pixels  # Pillow's decode (+ draft), box + bicubic
    assert sent.format == "JPEG" and sent.size == reference.size == (got.width, got.height)
    assert mean_abs_diff(sent.convert("RGB"), reference) < 2.5


def test_a_truncated_jpeg_is_refused_not_sent_half_gray() -> None:
    data = encoded(photo(1632, 1224), quality=90)
    with pytest.raises(MediaError) as err:
        wire_image(data[: len(data) // 2], ImageWire("JPEG"), source="half.jpg")
    assert err.value.kind == "failed_to_decode" and err.value.source == "half.jpg"
