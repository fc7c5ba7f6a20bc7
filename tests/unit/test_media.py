"""Media loading: every input mode to RGB, Qwen resizing, typed errors for every kind of bad file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caprl_kit.errors import MediaError
from caprl_kit.io.media import load_image, load_video, sample_times, smart_resize
from media_factory import make_image, make_image_bytes, make_video_bytes


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_smart_resize_matches_qwen_rules() -> None:
    assert smart_resize(64, 96, min_pixels=3136, max_pixels=1003520) == (56, 84)
    h, w = smart_resize(3000, 4000, max_pixels=1003520)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1003520 and abs(w / h - 4 / 3) < 0.05
    h, w = smart_resize(10, 10, min_pixels=3136)
    assert h * w >= 3136


def test_load_from_path_bytes_pil_and_fsspec_url(media_dir: Path) -> None:
    import fsspec

    raw = (media_dir / "img_0.png").read_bytes()
    with fsspec.open("memory://media/img_0.png", "wb") as fh:
        fh.write(raw)
    for src in (media_dir / "img_0.png", str(media_dir / "img_0.png"), raw, "memory://media/img_0.png"):
        loaded = load_image(src)
        assert loaded.image.mode == "RGB" and (loaded.height, loaded.width) == (56, 84)
        assert loaded.content_hash is not None and len(loaded.content_hash) == 64
    assert load_image(Image.open(io.BytesIO(raw))).content_hash is None


@pytest.mark.parametrize(
    "name, data, kind",
    [
        ("zero-byte file", b"", "empty_file"),
        ("truncated jpeg", make_image_bytes(fmt="JPEG", size=(200, 150))[:300], "failed_to_decode"),
        ("non-image bytes", b"%PDF-1.4 definitely not an image" * 4, "failed_to_decode"),
    ],
)
def test_bad_image_bytes(name: str, data: bytes, kind: str) -> None:
    with pytest.raises(MediaError) as err:
        load_image(data)
    assert err.value.kind == kind
    assert err.value.source == f"<{len(data)} bytes>"


def test_missing_path_is_typed(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as err:
        load_image(tmp_path / "absent.jpg")
    assert err.value.kind == "file_not_found" and "absent.jpg" in err.value.source


def test_decompression_bomb_guard_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)  # 1-bit: a few hundred KB on disk, 900 Mpx decoded
    with pytest.raises(MediaError) as err:
        load_image(path)
    assert err.value.kind == "too_large"
    assert "900000000 pixels" in err.value.reason and "max_image_pixels" in err.value.reason
    # below Pillow's own hard limit our configurable guard still applies, with the dimensions
    with pytest.raises(MediaError, match=r"100x100 = 10000 pixels exceeds media.max_image_pixels=5000"):
        load_image(make_image_bytes(size=(100, 100)), max_image_pixels=5000)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = make_image_bytes(color=(255, 0, 0), size=(64, 64), fmt="JPEG", mode="CMYK")
    img = load_image(data, resize=False).image
    assert img.mode == "RGB"
    r, g, b = img.getpixel((32, 32))
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped() -> None:
    arr = np.full((32, 32), 32768, dtype=np.uint16)
    data = png(Image.fromarray(arr))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = load_image(data, resize=False).image
    assert img.mode == "RGB" and abs(img.getpixel((5, 5))[0] - 128) <= 1


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.paste(1, (0, 0, 16, 32))  # left half red, right half transparent index 0
    data = png(img, transparency=0)
    out = load_image(data, resize=False).image
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == (255, 0, 0) and out.getpixel((28, 4)) == (255, 255, 255)


def test_grayscale_and_rgba() -> None:
    assert load_image(make_image_bytes(mode="L")).image.mode == "RGB"
    rgba = Image.new("RGBA", (40, 40), (0, 0, 255, 0))
    assert load_image(png(rgba), resize=False).image.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = load_image(buf.getvalue(), resize=False).image
    r, g, b = img.getpixel((10, 10))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 30), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    out = load_image(buf.getvalue(), resize=False).image
    assert out.size == (30, 60)


def test_video_frames_sampled_by_fps_with_timestamps() -> None:
    clip = load_video(make_video_bytes(n_frames=30, fps=10), fps=2.0, min_frames=2, max_frames=32)
    assert clip.duration == pytest.approx(3.0, abs=0.11)
    assert len(clip.frames) == 6 and len(clip.timestamps) == 6
    assert clip.timestamps == sorted(clip.timestamps)
    assert all(abs(t - s) <= 0.06 for t, s in zip(clip.timestamps, sample_times(3.0, 2.0, 2, 32)))
    assert clip.frames[0].mode == "RGB" and clip.width % 28 == 0
    # the bar grows: later frames are redder on the right half
    right = [np.asarray(f)[:, f.width // 2 :, 0].mean() for f in clip.frames]
    assert right[-1] > right[0]


def test_video_frame_count_is_capped_and_even() -> None:
    clip = load_video(make_video_bytes(n_frames=60, fps=10), fps=10, max_frames=8)
    assert len(clip.frames) == 8
    assert len(load_video(make_video_bytes(n_frames=5, fps=10), fps=1, min_frames=3).frames) == 2


def test_corrupt_video_is_typed(media_dir: Path) -> None:
    with pytest.raises(MediaError) as err:
        load_video(media_dir / "corrupt.mp4")
    assert err.value.kind in ("failed_to_decode", "no_frames")


def test_video_with_zero_decodable_frames() -> None:
    """A well-formed container whose frame data is destroyed: the header parses, no frame decodes."""
    data = bytearray(make_video_bytes(n_frames=10))
    start = data.index(b"mdat") + 4
    end = data.index(b"moov") - 4
    data[start:end] = b"\x00" * (end - start)
    with pytest.raises(MediaError) as err:
        load_video(bytes(data))
    assert err.value.kind == "no_frames"


# --------------------------------------------------------------------------- defensive reads


def test_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path: Path) -> None:
    from caprl_kit.io.media import read_bytes
    from hang_guard import finishes_within

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def attempt() -> MediaError:
        with pytest.raises(MediaError) as err:
            load_image(fifo)
        return err.value

    err = finishes_within(5, attempt, fifos=[fifo])  # opening it for reading would block until a writer came
    assert err.kind == "not_a_regular_file" and "FIFO" in err.reason and err.source == str(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)  # a symlink is judged by what it points at
    with pytest.raises(MediaError, match="not_a_regular_file: .*FIFO"):
        finishes_within(5, lambda: read_bytes(link), fifos=[fifo])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_sockets_and_directories_are_not_regular_files(tmp_path: Path) -> None:
    import socket
    import time

    from caprl_kit.io.media import read_bytes

    t0 = time.monotonic()
    with pytest.raises(MediaError, match="character device") as err:
        read_bytes("/dev/zero")  # endless: reading it would grow memory until the kernel kills the process
    assert err.value.kind == "not_a_regular_file" and time.monotonic() - t0 < 1
    with pytest.raises(MediaError, match="directory") as err:
        read_bytes(tmp_path)
    assert err.value.kind == "not_a_regular_file"
    sock_path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(MediaError, match="socket") as err:
            read_bytes(sock_path)
    assert err.value.kind == "not_a_regular_file"


def test_byte_cap_before_reading_for_files_urls_and_embedded_bytes(tmp_path: Path) -> None:
    import fsspec

    from caprl_kit.io.config import MediaConfig
    from caprl_kit.io.media import load_media, read_bytes

    data = make_image_bytes(size=(64, 64))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    cap = len(data) - 1
    with pytest.raises(MediaError, match=rf"{len(data)} bytes, over media.max_file_bytes={cap}") as err:
        load_image(path, max_bytes=cap)
    assert err.value.kind == "too_large"
    with fsspec.open("memory://caps/a.png", "wb") as fh:
        fh.write(data)
    with pytest.raises(MediaError, match="too_large: memory://caps/a.png"):
        read_bytes("memory://caps/a.png", cap)
    assert read_bytes("memory://caps/a.png", len(data)) == data  # exactly at the cap is fine
    with pytest.raises(MediaError, match=r"embedded media, over media.max_file_bytes") as err:
        load_media(None, data, "image", MediaConfig(max_file_bytes=cap))
    assert err.value.kind == "too_large"
    media, raw = load_media(str(path), None, "image", MediaConfig(max_file_bytes=len(data)))
    assert raw == data and media.width > 0
    with pytest.raises(MediaError, match="too_large") as err:
        load_media(str(path), None, "video", MediaConfig(max_file_bytes=cap))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs procfs")
def test_byte_cap_holds_while_reading_when_the_listed_size_is_wrong() -> None:
    """procfs files are regular files that list 0 bytes but hold more: the cap is enforced on what is read."""
    from caprl_kit.io.media import read_bytes

    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(MediaError, match="listed size was 0") as err:
        read_bytes("/proc/self/status", 16)
    assert err.value.kind == "too_large"
    assert b"Name:" in read_bytes("/proc/self/status", 1 << 20)  # under the cap it reads to the end
