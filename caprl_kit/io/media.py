"""Image and video loading with typed failures.

Images: path, fsspec URL, bytes or PIL -> RGB (EXIF orientation applied; RGBA/LA/P composited on white; CMYK,
16-bit and grayscale converted), a decompression-bomb guard checked from the header before decoding, Qwen-style
min/max-pixel resizing, and a sha256 content hash.

Videos are decoded with PyAV (``av``): maintained, wheels on PyPI with FFmpeg bundled, no system libraries or
torch-version coupling (torchcodec needs a matching torch build and system FFmpeg; decord 0.6 is unmaintained).
Frames are sampled by fps with a min/max count and keep their timestamps, which CapRL++ captions cite as
``[mm:ss]``; io/video_decode.py decodes them, seeking to the keyframe before each sampled frame where that decodes
fewer frames than one pass from the start (``media.video_decoder``), with the same frames either way; with
``media.video_keyframe_snap_s`` an instant near a keyframe takes the keyframe (decoded alone), still with its own
timestamp.

Reads are defensive: only regular files are opened (a FIFO, device, socket or directory is a
``not_a_regular_file`` error found by ``stat``, never by ``open``, which would block on a FIFO), and no read takes
more than ``media.max_file_bytes`` (checked against the size first, then enforced by reading at most one byte
more, so a file whose size is unknown or wrong cannot grow memory).

An http(s) URL is read by ``io/urls.py``: connect and read timeouts (``media.url_connect_timeout_s`` /
``media.url_read_timeout_s``), the same size cap while streaming, and a wait that Ctrl-C ends at once.

Every failure is a ``MediaError`` with a stable ``kind``: ``file_not_found``, ``not_a_regular_file``,
``empty_file``, ``failed_to_decode``, ``too_large``, ``no_frames``, ``invalid_path`` (a path with a NUL byte or
bytes that are not UTF-8), ``url_timeout`` and ``url_error`` (io/urls.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from caprl_kit.errors import MediaError
from caprl_kit.io.urls import UrlLimits

IMAGE_FACTOR = 28  # Qwen-VL: patch 14 x merge 2
MAX_FILE_BYTES = 1 << 30  # default of media.max_file_bytes (1 GiB)
FRAME_FACTOR = 2  # Qwen-VL: temporal patch size


@dataclass(frozen=True)
class ImageWire:
    """How a back end takes images over the wire (``Backend.image_wire``); the decode workers build the payload, so
    the thread that feeds the engine only routes. ``fmt``: JPEG (quality 95) or PNG for an image decoded here;
    ``originals``: the server resizes images itself, so a file it can read as it is (an upright RGB or grayscale JPEG,
    PNG or WebP, one frame) is sent without being decoded; any other is decoded, resized and encoded here."""

    fmt: str = "JPEG"
    originals: bool = False
    frame_quality: int | None = None  #: a video's frames as JPEGs of this quality (None: frames stay pixels)


@dataclass(frozen=True)
class EncodedImage:
    """An image as it goes over the wire: a ``data:`` URL, and how it was made (``original``: the file's own bytes;
    ``encoded``: decoded, resized and encoded here)."""

    url: str
    sent: str


@dataclass
class LoadedImage:
    image: Image.Image | None  # None when only its wire form was made (``encoded``)
    width: int
    height: int
    content_hash: str | None
    source: str
    encoded: EncodedImage | None = None

    @property
    def pixels(self) -> Image.Image:
        """The decoded image (``load_image`` keeps it; ``wire_image`` does not)."""
        assert self.image is not None, "only the wire form of this image was made"
        return self.image

    @property
    def payload(self) -> Image.Image | EncodedImage:
        """What a request carries: the wire form when one was made, else the pixels."""
        return self.encoded if self.encoded is not None else self.pixels


@dataclass
class VideoClip:
    """Sampled frames of a video and when they were shown (seconds)."""

    frames: list[Image.Image]
    timestamps: list[float]
    duration: float
    source: str
    content_hash: str | None = None
    sample_fps: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)  #: ``decoder`` (sparse/linear) and its ``decoded_frames``
    encoded_frames: list[str] | None = None  #: base64 JPEGs of ``frames`` made in a decode worker (``ImageWire``)

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height


def describe(src: Any) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return f"<PIL {src.mode} {src.width}x{src.height}>"
    return str(src)


def read_bytes(src: str | Path | bytes, max_bytes: int = MAX_FILE_BYTES, limits: UrlLimits | None = None) -> bytes:
    """Bytes of a local path or fsspec URL (``memory://``, ``s3://`` ...), or the bytes themselves.

    Only regular files are opened; at most ``max_bytes`` are read (``too_large`` above that); ``limits``: the
    timeouts of an http(s) read (default: ``io.urls.DEFAULT_LIMITS``)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        _check_size(len(data), max_bytes, describe(src), " of embedded media")
    else:
        data = _read_file(str(src), max_bytes, limits)
    if not data:
        raise MediaError("empty_file", describe(src), "the file is empty (0 bytes)")
    return data


_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def file_type(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")


def _check_size(size: int, max_bytes: int, source: str, what: str = "") -> None:
    if size > max_bytes:
        raise MediaError(
            "too_large",
            source,
            f"{size} bytes{what}, over media.max_file_bytes={max_bytes} (raise it if the file is trusted)",
        )


def _over_cap(source: str, max_bytes: int, listed: Any) -> MediaError:
    return MediaError(
        "too_large",
        source,
        f"more than media.max_file_bytes={max_bytes} bytes read although its "
        f"listed size was {listed} (raise the cap if the file is trusted)",
    )


def _read_capped(fh: Any, max_bytes: int, size: int | None) -> bytes:
    """Read to the end but never more than ``max_bytes + 1`` bytes: a listed size may be unknown or wrong
    (``/proc`` files list 0, a file may grow). The first read is sized by the listing, so a small file costs one
    small read."""
    chunks: list[bytes] = []
    total = 0
    want = min(size or 0, max_bytes) + 1  # one byte more than listed notices a longer file
    while total <= max_bytes:
        chunk = fh.read(min(want, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = 1 << 20
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _not_regular(source: str, what: str) -> MediaError:
    return MediaError("not_a_regular_file", source, f"{what}, not a regular file: only regular files are read")


def printable(text: str) -> str:
    """``text`` as UTF-8 can hold it: bytes that were not UTF-8 (surrogate escapes) as ``\\xNN``, NUL as ``\\x00``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (JSON "\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")
    return raw.decode("utf-8", "backslashreplace").replace("\0", "\\x00")


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be opened as written (a NUL byte, bytes that are not UTF-8), else None."""
    if "\0" in path:
        return f"the path holds a NUL byte (at character {path.index(chr(0))})"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the path is not valid UTF-8 (its bytes shown as \\xNN); rename the file or write the path in UTF-8"
    return None


@contextmanager
def _io_errors(source: str, detail: bool = True) -> Iterator[None]:
    """A failed open/stat/read as ``MediaError("file_not_found")`` (``detail``: the OS's text for a missing file);
    a path the OS cannot take as ``invalid_path``; a network failure (fsspec's http filesystem) as ``url_timeout``
    / ``url_error``."""
    try:
        yield
    except FileNotFoundError as exc:
        raise MediaError("file_not_found", source, (detail and str(exc)) or "no such file") from None
    except TimeoutError as exc:  # aiohttp's socket timeouts are TimeoutErrors too
        raise MediaError("url_timeout", source, f"no answer in time: {type(exc).__name__} {exc}".strip()) from None
    except OSError as exc:
        raise MediaError("file_not_found", source, f"cannot read: {exc}") from None
    except ValueError:  # "embedded null byte", a UnicodeEncodeError of a path
        problem = path_problem(source)
        if problem is None:
            raise
        raise MediaError("invalid_path", printable(source), problem) from None
    except Exception as exc:
        if not type(exc).__module__.startswith("aiohttp"):  # e.g. ClientResponseError: an HTTP 500 from fsspec
            raise
        raise MediaError("url_error", source, f"{type(exc).__name__}: {exc}") from None


def _read_file(src: str, max_bytes: int, limits: UrlLimits | None = None) -> bytes:
    from fsspec.implementations.local import LocalFileSystem

    from caprl_kit.io.fs import url_to_fs
    from caprl_kit.io.urls import is_http, read_url

    problem = path_problem(src)
    if problem is not None:
        raise MediaError("invalid_path", printable(src), problem)
    if is_http(src):
        return read_url(src, max_bytes, limits)
    with _io_errors(src):
        fs, path = url_to_fs(src)
        if isinstance(fs, LocalFileSystem):
            return _read_local(path, max_bytes, src)
    return _read_remote(fs, path, src, max_bytes)


def _read_remote(fs: Any, path: str, src: str, max_bytes: int) -> bytes:
    """A file of another fsspec filesystem (``memory://`` at once; ``s3://`` ... in cancellable waits)."""
    from fsspec.implementations.memory import MemoryFileSystem

    from caprl_kit.io.urls import call_cancellable

    if not isinstance(fs, MemoryFileSystem):  # a network read: Ctrl-C must not wait for it
        return call_cancellable(lambda: _read_fs(fs, path, src, max_bytes))
    return _read_fs(fs, path, src, max_bytes)


def _read_fs(fs: Any, path: str, src: str, max_bytes: int) -> bytes:
    with _io_errors(src):
        info = fs.info(path)
    kind = info.get("type")
    if kind == "directory":
        raise _not_regular(src, "a directory")
    if kind not in (None, "file"):
        raise _not_regular(src, f"of type {kind!r}")
    if info.get("size") is not None:
        _check_size(int(info["size"]), max_bytes, src)
    with _io_errors(src), fs.open(path, "rb") as fh:
        data = _read_capped(fh, max_bytes, info.get("size"))
    if len(data) > max_bytes:
        raise _over_cap(src, max_bytes, info.get("size", "unknown"))
    return data


def _read_local(path: str, max_bytes: int, source: str) -> bytes:
    """``stat`` before ``open`` (opening a FIFO blocks, opening a device can have effects), then ``fstat`` the
    opened file (non-blocking) so a swap between the two calls is caught too."""
    with _io_errors(source, detail=False):
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(source, file_type(st.st_mode))
    _check_size(st.st_size, max_bytes, source)
    with _io_errors(source, detail=False):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(source, file_type(st.st_mode))
        with _io_errors(source, detail=False):
            data = _read_capped(fh, max_bytes, st.st_size)
    if len(data) > max_bytes:
        raise _over_cap(source, max_bytes, st.st_size)  # /proc files list 0; or it grew while being read
    return data


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = 3136, max_pixels: int = 1003520
) -> tuple[int, int]:
    """Qwen-VL's resize rule: both sides multiples of ``factor``, area within [min_pixels, max_pixels],
    aspect ratio kept as closely as possible."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise MediaError("failed_to_decode", f"{width}x{height}", "aspect ratio above 200 is not supported")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def resample(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resize to ``size`` (w, h). While the image is at least twice the target on both sides it is first
    reduced by the whole factor with a box filter (anti-aliased, as Pillow's ``reducing_gap``); the rest is OpenCV's
    bicubic, about ten times faster than Pillow's on one core (Pillow's where OpenCV is not installed)."""
    if img.size == size:
        return img
    k = min(img.width // size[0], img.height // size[1])
    if k >= 2:
        img = img.reduce(k)
    cv2 = _opencv()
    if cv2 is None:
        return img.resize(size, Image.Resampling.BICUBIC)
    import numpy as np

    return Image.fromarray(cv2.resize(np.asarray(img), size, interpolation=cv2.INTER_CUBIC))


@functools.cache
def _opencv() -> Any:
    """OpenCV, on one thread per call (the decode workers run in parallel already: its own pool would only add
    CPU time); None where it is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white; 16-bit is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8"), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


_PIL_LIMIT_LOCK = threading.Lock()


def _open_image(data: bytes, max_image_pixels: int) -> Image.Image:
    """``Image.open`` with Pillow's bomb limit set to ours (Pillow errors at twice its limit, we check at once)."""
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_image_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def load_image(
    src: str | Path | bytes | Image.Image,
    *,
    min_pixels: int = 3136,
    max_pixels: int = 1003520,
    max_image_pixels: int = 178_956_970,
    resize: bool = True,
    max_bytes: int = MAX_FILE_BYTES,
) -> LoadedImage:
    """Decode, normalise and (optionally) resize an image. Raises ``MediaError`` with a stable kind."""
    source = describe(src)
    digest = None
    if isinstance(src, Image.Image):
        img = src
    else:
        data = read_bytes(src, max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        try:
            img = _open_image(data, max_image_pixels)
        except Image.DecompressionBombError as exc:
            raise MediaError(
                "too_large",
                source,
                f"{exc} (media.max_image_pixels={max_image_pixels}; "
                "decompression-bomb guard, raise it if the image is trusted)",
            ) from None
        except UnidentifiedImageError:
            raise MediaError("failed_to_decode", source, "not a readable image: unrecognised format") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise MediaError("failed_to_decode", source, f"not a readable image: {exc}") from None
        if img.width * img.height > max_image_pixels:
            raise MediaError(
                "too_large",
                source,
                f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds media.max_image_pixels="
                f"{max_image_pixels} (decompression-bomb guard; raise it if the image is trusted)",
            )
        if resize and img.format == "JPEG":  # decode at the smallest DCT scale (1/2, 1/4, 1/8) still >= the target
            th, tw = smart_resize(img.height, img.width, min_pixels=min_pixels, max_pixels=max_pixels)
            img.draft(None, (tw, th))
        try:
            if getattr(img, "is_animated", False):
                img.seek(0)  # animated GIF/WebP: first frame
            if img.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: turned upright (a copy otherwise)
                img = ImageOps.exif_transpose(img)
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise MediaError("failed_to_decode", source, f"image data is corrupt or truncated: {exc}") from None
    img = to_rgb(img)
    if resize:
        h, w = smart_resize(img.height, img.width, min_pixels=min_pixels, max_pixels=max_pixels)
        img = resample(img, (w, h))
    return LoadedImage(image=img, width=img.width, height=img.height, content_hash=digest, source=source)


#: formats a server decodes as they are, and their MIME types
WIRE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def as_sent(data: bytes, max_image_pixels: int) -> tuple[int, int, str] | None:
    """(width, height, MIME type) when the file can go to a server as it is (``ImageWire.originals``): a JPEG, PNG or WebP,
    one frame, RGB or grayscale, no EXIF rotation, within the decompression-bomb guard; None when it must be decoded
    here (alpha to composite, CMYK, 16-bit, a rotation to apply, another format). Reads the header only."""
    try:
        img = _open_image(data, max_image_pixels)
    except Exception:  # noqa: BLE001  # any header a server cannot read: load_image decodes it and names the error
        return None
    if img.format not in WIRE_FORMATS or img.mode not in ("RGB", "L") or getattr(img, "is_animated", False):
        return None
    if img.width * img.height > max_image_pixels:
        return None
    try:
        if img.getexif().get(0x0112, 1) != 1:  # Orientation: the server would not rotate it
            return None
    except (OSError, ValueError, SyntaxError):
        return None
    return img.width, img.height, WIRE_FORMATS[img.format]


def wire_image(data: bytes, wire: ImageWire, source: str | None = None, **load: Any) -> LoadedImage:
    """An image file in a back end's wire form (``ImageWire``): its own bytes when they can go as they are, else
    decoded with ``load_image(**load)`` and encoded (JPEG quality 95 or PNG). The pixels are not kept. ``source``
    names the file in a ``MediaError``."""

    def made(width: int, height: int, url: str, sent: str) -> LoadedImage:
        return LoadedImage(
            image=None,
            width=width,
            height=height,
            content_hash=hashlib.sha256(data).hexdigest(),
            source=source or describe(data),
            encoded=EncodedImage(url, sent),
        )

    header = as_sent(data, load.get("max_image_pixels", 178_956_970))
    if header is not None and wire.originals:
        width, height, mime = header
        return made(width, height, f"data:{mime};base64,{base64.b64encode(data).decode()}", "original")
    if header is not None and header[2] == "image/jpeg" and wire.fmt == "JPEG":
        fast = _jpeg_to_jpeg(data, header[0], header[1], load.get("min_pixels", 3136), load.get("max_pixels", 1003520))
        if fast is not None:
            return made(*fast, "encoded")
    try:
        loaded = load_image(data, **load)
    except MediaError as exc:
        raise MediaError(exc.kind, source or exc.source, exc.reason) from None
    assert loaded.image is not None
    loaded.encoded = EncodedImage(encode_image(loaded.image, wire.fmt), "encoded")
    loaded.image = None
    return loaded


#: OpenCV's reduced-scale JPEG decodes (the DCT scaling of Pillow's ``draft``), by factor
_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def _jpeg_to_jpeg(
    data: bytes, width: int, height: int, min_pixels: int, max_pixels: int
) -> tuple[int, int, str] | None:
    """A plain JPEG (upright RGB or grayscale, checked by ``as_sent``) resized and re-encoded entirely in OpenCV:
    the same decoder (libjpeg-turbo), scale reduction and bicubic as ``load_image`` + ``resample``, without the
    copies between Pillow and NumPy (~3 ms of a 2 MP photo). None (``load_image`` then decodes it and names what is
    wrong) where OpenCV is missing or the file does not end with its end-of-image marker: OpenCV would fill a
    truncated file with gray where Pillow refuses it."""
    cv2 = _opencv()
    if cv2 is None or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    import numpy as np

    h, w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    k = max((f for f in _REDUCED if width // w >= f and height // h >= f), default=1)
    flag = getattr(cv2, _REDUCED[k]) if k > 1 else cv2.IMREAD_COLOR
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        return None
    k = min(arr.shape[1] // w, arr.shape[0] // h)
    if k >= 2:  # what is left of a whole factor: a box reduction, as Pillow's reduce
        arr = cv2.resize(arr, (arr.shape[1] // k, arr.shape[0] // k), interpolation=cv2.INTER_AREA)
    if arr.shape[:2] != (h, w):
        arr = cv2.resize(arr, (w, h), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        return None
    return w, h, f"data:image/jpeg;base64,{base64.b64encode(buf.tobytes()).decode()}"


def jpeg_base64(img: Image.Image, quality: int) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


def encode_image(img: Image.Image, fmt: str = "JPEG") -> str:
    """``img`` as a ``data:`` URL: JPEG (quality 95) or PNG (lossless)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return f"data:{WIRE_FORMATS[fmt]};base64,{base64.b64encode(buf.getvalue()).decode()}"


def sample_times(duration: float, fps: float, min_frames: int, max_frames: int) -> list[float]:
    """Evenly spaced sampling instants (frame centres) for ``duration`` seconds at ``fps``, count clamped and
    rounded to an even number (Qwen's temporal patch)."""
    n = round(duration * fps)
    n = min(max(n, min_frames), max_frames)
    n = max(FRAME_FACTOR, n - n % FRAME_FACTOR)
    step = duration / n
    return [step * (i + 0.5) for i in range(n)]


def load_video(
    src: str | Path | bytes,
    *,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 32,
    max_pixels: int = 200704,
    min_pixels: int = 3136,
    max_bytes: int = MAX_FILE_BYTES,
    decoder: str = "auto",
    keyframe_snap_s: float = 0.0,
) -> VideoClip:
    """Decode a video with PyAV and sample frames by ``fps`` (count in [min_frames, max_frames]). ``decoder``
    (``media.video_decoder``): ``auto``, ``sparse`` or ``linear`` (io/video_decode.py); the frames and timestamps
    are the same whichever decodes them. ``keyframe_snap_s`` (``media.video_keyframe_snap_s``): a sampling instant
    within that many seconds of a keyframe takes the keyframe (``video_decode.snap``)."""
    from caprl_kit.io.video_decode import decode_at

    source = describe(src)
    data = read_bytes(src, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    duration = _probe_duration(data, source)
    got = decode_at(data, source, sample_times(duration, fps, min_frames, max_frames), decoder, keyframe_snap_s)
    h, w = smart_resize(got.images[0].height, got.images[0].width, min_pixels=min_pixels, max_pixels=max_pixels)
    return VideoClip(
        frames=[resample(to_rgb(f), (w, h)) for f in got.images],
        timestamps=got.timestamps,
        duration=round(duration, 3),
        source=source,
        content_hash=digest,
        sample_fps=len(got.images) / duration,
        meta={
            "decoder": got.decoder,
            "decoded_frames": got.stats.get("decoded"),
            "snapped": got.stats.get("snapped", 0),
        },
    )


def _open_video(data: bytes, source: str) -> Any:
    from caprl_kit.io.video_decode import open_video

    return open_video(data, source)


def _probe_duration(data: bytes, source: str) -> float:
    """Duration from the container header, or (no header value) from a pass over frame times."""
    import av

    with _open_video(data, source) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            return float(stream.duration * stream.time_base)
        if container.duration:
            return container.duration / 1_000_000
        last = None
        rate = float(stream.average_rate or 25)
        try:
            for frame in container.decode(stream):
                last = float(frame.time) if frame.time is not None else (last or 0.0) + 1 / rate
        except (av.error.FFmpegError, ValueError, OSError):
            pass
        if last is None:
            raise MediaError("no_frames", source, "no decodable frames")
        return last + 1 / rate


def url_limits(cfg: Any) -> UrlLimits:
    """The URL timeouts of a ``MediaConfig`` (defaults for an object without them)."""
    from caprl_kit.io.urls import DEFAULT_LIMITS

    return UrlLimits(
        getattr(cfg, "url_connect_timeout_s", DEFAULT_LIMITS.connect_s),
        getattr(cfg, "url_read_timeout_s", DEFAULT_LIMITS.read_s),
    )


def load_media(
    source: str | None, data: bytes | None, media_type: str, cfg: Any, wire: ImageWire | None = None
) -> tuple[LoadedImage | VideoClip, bytes]:
    """Decode an input item's image or video with ``MediaConfig`` settings; returns (media, encoded bytes).
    Embedded ``data`` gets the same ``max_file_bytes`` cap as a file. ``wire``: an image is made in that back end's
    wire form (``wire_image``) instead of pixels. Raises ``MediaError`` naming the source."""
    label = source or describe(data)
    cap = cfg.max_file_bytes
    try:
        raw = read_bytes(data if data is not None else source, cap, url_limits(cfg))  # type: ignore[arg-type]  # one of data and source is given (load_media's contract)
        if media_type == "video":
            clip = load_video(
                raw,
                fps=cfg.video_fps,
                min_frames=cfg.video_min_frames,
                max_frames=cfg.video_max_frames,
                max_pixels=cfg.video_max_pixels,
                max_bytes=cap,
                decoder=getattr(cfg, "video_decoder", "auto"),
                keyframe_snap_s=getattr(cfg, "video_keyframe_snap_s", 0.0),
            )
            if wire is not None and wire.frame_quality is not None:
                clip.encoded_frames = [jpeg_base64(f, wire.frame_quality) for f in clip.frames]
            media: LoadedImage | VideoClip = clip
        else:
            load = {
                "min_pixels": cfg.min_pixels,
                "max_pixels": cfg.max_pixels,
                "max_image_pixels": cfg.max_image_pixels,
                "max_bytes": cap,
            }
            media = wire_image(raw, wire, **load) if wire is not None else load_image(raw, **load)
    except MediaError as exc:
        raise MediaError(exc.kind, label, exc.reason) from None
    media.source = label
    return media, raw
