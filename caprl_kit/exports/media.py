"""Media paths in an export: every row names its image or video by a path relative to the export folder.

``link`` (default): a local file the run names is referenced where it is (``../../data/img_0001.jpg``); nothing
is copied. Media the run holds only as embedded bytes (annotate ``output.embed_media``, curate
``export.embed_media`` with no file) are written once to ``media/<digest><ext>``. A URL source (``https://``,
``s3://``) is kept as the URL (ms-swift reads URLs; LLaMA-Factory and EasyR1 need files: use ``copy``).
``copy``: every medium is copied (or downloaded) into ``media/``, so the folder is self-contained and can be moved.

The trainers resolve these paths against the export folder: LLaMA-Factory's ``media_dir`` (default: its
``dataset_dir``), EasyR1's ``data.image_dir``, ms-swift's ``ROOT_IMAGE_DIR`` (docs/exports.md).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
from pathlib import Path

from caprl_kit.errors import MediaError
from caprl_kit.exports.runs import MediaRef, Tally
from caprl_kit.log import get_logger
from caprl_kit.schemas.layout import EXPORT_MEDIA_DIR

log = get_logger(__name__)

MEDIA_DIR = EXPORT_MEDIA_DIR
MODES = ("link", "copy")
_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


def _suffix(source: str | None) -> str:
    if not source:
        return ""
    ext = posixpath.splitext(source.split("?", 1)[0])[1].lower()
    return ext if 1 < len(ext) <= 6 else ""


def _extension(data: bytes, source: str | None, media_type: str) -> str:
    """The extension of embedded bytes: an image's is what Pillow reads it as (whatever its source was named), a
    video's its source's, else ``.mp4``."""
    if media_type == "video":
        return _suffix(source) or ".mp4"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _PIL_EXT.get(im.format or "", _suffix(source) or ".png")
    except (UnidentifiedImageError, OSError):
        return _suffix(source) or ".bin"


class MediaPaths:
    """Turns a ``MediaRef`` into the path a row of the export names (relative to ``root``), writing files under
    ``root/media`` where needed; each medium once however many rows name it."""

    def __init__(self, root: Path, mode: str = "link"):
        self.root = root
        self.mode = mode
        self.written: list[str] = []  # files this export wrote under media/ (relative to root)
        self.urls = 0  # rows that name a URL (link mode)
        self._done: dict[str, str | None] = {}

    def path(self, ref: MediaRef, tally: Tally) -> str | None:
        """The row's media path, or None (counted on ``tally`` by reason) when the run has no reachable media."""
        key = ref.source or (hashlib.sha256(ref.data).hexdigest() if ref.data is not None else "")
        if key in self._done:
            found = self._done[key]
        else:
            found = self._done[key] = self._resolve(ref, tally)
        if found is None:
            tally.skip("media_not_found" if ref.source or ref.data is not None else "no_media")
        elif "://" in found:
            self.urls += 1
        return found

    def _resolve(self, ref: MediaRef, tally: Tally) -> str | None:
        src = ref.source
        if src and "://" not in src and os.path.isfile(src):
            if self.mode == "link":
                return Path(os.path.relpath(src, self.root)).as_posix()
            return self._copy(src, ref.media_type)
        if ref.data is not None:
            return self._write(ref.data, _extension(ref.data, src, ref.media_type))
        if src and "://" in src:
            return src if self.mode == "link" else self._download(src, ref.media_type, tally)
        if src:
            log.debug("media %s is not a file here", src)
        return None

    def _target(self, digest: str, ext: str) -> tuple[Path, str]:
        rel = f"{MEDIA_DIR}/{digest[:20]}{ext}"
        return self.root / rel, rel

    def _write(self, data: bytes, ext: str) -> str:
        file, rel = self._target(hashlib.sha256(data).hexdigest(), ext)
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, file)
            self.written.append(rel)
        return rel

    def _copy(self, src: str, media_type: str) -> str:
        digest = hashlib.sha256(os.path.abspath(src).encode()).hexdigest()
        file, rel = self._target(digest, _suffix(src) or (".mp4" if media_type == "video" else ".png"))
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, file)
            self.written.append(rel)
        return rel

    def _download(self, url: str, media_type: str, tally: Tally) -> str | None:
        from caprl_kit.io.media import read_bytes

        try:
            data = read_bytes(url)
        except MediaError as exc:
            tally.note(f"could not download {url} ({exc.kind}: {exc.reason})")
            return None
        return self._write(data, _extension(data, url, media_type))
