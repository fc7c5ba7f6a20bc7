"""The export helpers without a run: media paths (link, copy, embedded bytes, missing files, URLs), the file names
submissions are keyed by, the options each format takes, and the registry's formats."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from media_factory import make_image_bytes

from caprl_kit.errors import CaprlError
from caprl_kit.exports import FORMATS
from caprl_kit.exports.core import ExportOptions
from caprl_kit.exports.media import MediaPaths
from caprl_kit.exports.runs import MediaRef, Run, image_id, strip_placeholders


class Tally:
    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.notes: list[str] = []

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_link_names_local_files_relative_to_the_export_folder(tmp_path: Path) -> None:
    src = tmp_path / "data" / "a.png"
    src.parent.mkdir()
    src.write_bytes(make_image_bytes())
    out = tmp_path / "exports" / "lf"
    paths, tally = MediaPaths(out, "link"), Tally()
    rel = paths.path(MediaRef(str(src), None), tally)
    assert rel == "../../data/a.png" and (out / rel).resolve() == src.resolve()
    assert paths.written == [] and not tally.skipped


def test_copy_and_embedded_bytes_write_each_medium_once_under_media(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(make_image_bytes())
    out = tmp_path / "out"
    paths, tally = MediaPaths(out, "copy"), Tally()
    first = paths.path(MediaRef(str(src), None), tally)
    assert first is not None and first.startswith("media/") and first.endswith(".png")
    assert paths.path(MediaRef(str(src), None), tally) == first and len(paths.written) == 1
    assert (out / first).read_bytes() == src.read_bytes()
    jpeg = make_image_bytes(fmt="JPEG")
    linked = MediaPaths(out, "link")
    got = linked.path(MediaRef(None, jpeg), tally)  # bytes only: written even in link mode, named by content
    assert got is not None and got.endswith(".jpg") and (out / got).read_bytes() == jpeg
    # a file that is gone, with the run's bytes: the bytes are used
    assert linked.path(MediaRef(str(tmp_path / "gone.png"), jpeg), tally) == got


def test_missing_media_is_counted_not_named(tmp_path: Path) -> None:
    paths, tally = MediaPaths(tmp_path, "link"), Tally()
    assert paths.path(MediaRef(str(tmp_path / "gone.png"), None), tally) is None
    assert paths.path(MediaRef(None, None), tally) is None
    assert tally.skipped == {"media_not_found": 1, "no_media": 1}


def test_urls_are_kept_in_link_mode(tmp_path: Path) -> None:
    paths, tally = MediaPaths(tmp_path, "link"), Tally()
    url = "https://example.org/x.jpg"
    assert paths.path(MediaRef(url, None), tally) == url and paths.urls == 1


def test_image_id_is_the_media_file_name() -> None:
    assert image_id("/data/all_images/test_01258.jpg", "k") == "test_01258.jpg"
    assert image_id("https://h.org/a/b.png?x=1", "k") == "b.png"
    assert image_id(None, "sub/aar_test_04600.jpg") == "aar_test_04600.jpg"
    assert strip_placeholders("<image> Please describe this image.") == "Please describe this image."


def test_options_are_refused_where_they_mean_nothing() -> None:
    lf, arena, lmms = FORMATS.get("llamafactory"), FORMATS.get("caparena"), FORMATS.get("lmms_eval")
    assert ExportOptions().checked(lf) == ExportOptions(media="link", captions="all")
    assert ExportOptions().checked(arena).captions == "first"
    with pytest.raises(CaprlError, match="--media does not apply to --format caparena"):
        ExportOptions(media="copy").checked(arena)
    with pytest.raises(CaprlError, match="--media must be one of link, copy"):
        ExportOptions(media="symlink").checked(lf)
    with pytest.raises(CaprlError, match="--doc-ids does not apply"):
        ExportOptions(doc_ids="ids.json").checked(lf)
    assert ExportOptions(lmms_task="detailcaps").checked(lmms).lmms_task == "detailcaps"
    with pytest.raises(CaprlError, match="--captions picks among"):
        ExportOptions(captions="first").checked(lf, Run("runs/cur", "curate"))


def test_every_format_resolves_and_says_what_it_takes() -> None:
    assert FORMATS.names() == ["caparena", "capmas", "easyr1", "llamafactory", "lmms_eval", "ms_swift"]
    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        assert fmt.name == name and fmt.summary and set(fmt.kinds()) <= {"curate", "pairs", "annotate", "eval"}
