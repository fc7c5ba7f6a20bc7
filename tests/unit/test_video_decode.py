"""Sparse (seek-based) video decoding returns the linear decoder's frames and timestamps, or its status, on a table
of awkward videos made here: variable frame rate, B-frames, no index, no timestamps, rotation, audio first, one
frame, all-keyframe, open GOPs (leading B-frames after a keyframe), HEVC (a decoder that does not skip), a damaged
or cut-off tail; and keyframe snapping, where both decoders take the same keyframes."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hang_guard import finishes_within
from media_factory import damage_tail, make_h264_video_bytes, make_video_bytes
from PIL import Image

from caprl_kit.errors import MediaError
from caprl_kit.io import video_decode
from caprl_kit.io.media import VideoClip, load_video

#: name -> (video bytes, the decoder that a forced sparse decode ends up using: None where either may, shortest
#: frame period in seconds)
CASES: dict[str, tuple[Any, str | None, float]] = {
    "cfr_gop10": (lambda: make_h264_video_bytes(gop=10), "sparse", 1 / 30),
    "bframes": (lambda: make_h264_video_bytes(bframes=3, gop=12), "sparse", 1 / 30),
    "open_gop": (lambda: make_h264_video_bytes(n_frames=90, open_gop=True, bframes=3, gop=12), "sparse", 1 / 30),
    "open_gop_matroska": (
        lambda: make_h264_video_bytes(n_frames=90, fmt="matroska", open_gop=True, bframes=3, gop=12),
        "sparse",
        1 / 30,
    ),
    "vfr_bframes": (lambda: make_h264_video_bytes(vfr=True, bframes=2, gop=10), "sparse", 0.02),
    "rotated_90": (lambda: make_h264_video_bytes(rotation=90, gop=10), "sparse", 1 / 30),
    "rotated_-90_bframes": (lambda: make_h264_video_bytes(rotation=-90, bframes=2, gop=10), "sparse", 1 / 30),
    "audio_first": (lambda: make_h264_video_bytes(audio_first=True, gop=10), "sparse", 1 / 30),
    "audio_first_vfr": (lambda: make_h264_video_bytes(audio_first=True, vfr=True, gop=10), "sparse", 0.02),
    "one_frame": (lambda: make_h264_video_bytes(n_frames=1), "sparse", 1 / 30),
    "all_keyframes": (lambda: make_h264_video_bytes(gop=1), "sparse", 1 / 30),
    "matroska_bframes": (lambda: make_h264_video_bytes(fmt="matroska", bframes=2, gop=10), "sparse", 1 / 30),
    "mpeg4_part2": (lambda: make_video_bytes(n_frames=60, fps=30), "sparse", 1 / 30),
    "hevc_bframes": (lambda: make_h264_video_bytes(n_frames=120, gop=30, bframes=4, codec="libx265"), "sparse", 1 / 30),
    "raw_h264_no_timestamps": (lambda: make_h264_video_bytes(fmt="h264", gop=10), "linear", 1 / 30),
    "mpegts_no_index": (lambda: make_h264_video_bytes(fmt="mpegts", bframes=2, gop=10), None, 1 / 30),
    "corrupt_tail": (lambda: damage_tail(make_h264_video_bytes(faststart=True, bframes=2, gop=10)), None, 1 / 30),
    "truncated_tail": (
        lambda: damage_tail(make_h264_video_bytes(faststart=True, gop=10), truncate=True),
        None,
        1 / 30,
    ),
    "truncated_matroska": (
        lambda: damage_tail(make_h264_video_bytes(fmt="matroska", bframes=2, gop=10), truncate=True),
        None,
        1 / 30,
    ),
    "damaged_index": (lambda: damage_tail(make_h264_video_bytes(gop=10), keep=0.97), None, 1 / 30),
}


def _decode(data: bytes, decoder: str, n: int) -> VideoClip | MediaError:
    try:
        return finishes_within(30, lambda: load_video(data, fps=100, min_frames=n, max_frames=n, decoder=decoder))
    except MediaError as exc:
        return exc


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.fixture(scope="module")
def videos() -> dict[str, bytes]:
    return {name: make() for name, (make, _, _) in CASES.items()}


@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("name", list(CASES))
def test_sparse_returns_the_linear_frames_or_status(videos: dict[str, bytes], name: str, n: int) -> None:
    _, expected_decoder, period = CASES[name]
    linear = _decode(videos[name], "linear", n)
    for decoder in ("sparse", "auto"):
        got = _decode(videos[name], decoder, n)
        if isinstance(linear, MediaError):
            assert isinstance(got, MediaError), f"{decoder}: decoded what the linear decoder rejects ({linear})"
            assert got.kind == linear.kind
            continue
        assert isinstance(got, VideoClip), f"{decoder}: {got}"
        assert len(got.frames) == len(linear.frames) == n
        assert max(abs(a - b) for a, b in zip(got.timestamps, linear.timestamps)) <= period
        assert max(_mad(a, b) for a, b in zip(got.frames, linear.frames)) < 1.0
        assert got.duration == linear.duration and got.content_hash == linear.content_hash
        assert [f.size for f in got.frames] == [f.size for f in linear.frames]
        if decoder == "sparse" and expected_decoder is not None:
            assert got.meta["decoder"] == expected_decoder
    if isinstance(linear, VideoClip):
        assert linear.meta["decoder"] == "linear"
        # frames shown at different times differ by far more than the tolerance, so a wrong pick would show
        distinct = dict(zip(linear.timestamps, linear.frames))
        frames = list(distinct.values())
        assert all(_mad(a, b) > 5 for a, b in itertools.pairwise(frames))
    if name == "one_frame":
        assert isinstance(linear, VideoClip) and len(set(linear.timestamps)) == 1
    if name in ("raw_h264_no_timestamps", "mpeg4_part2", "cfr_gop10"):
        assert isinstance(linear, VideoClip)  # these decode: the comparison above was made on frames


@pytest.mark.parametrize(("name", "bar_side"), [("rotated_90", "left"), ("rotated_-90_bframes", "right")])
def test_rotated_videos_are_turned_upright(videos: dict[str, bytes], name: str, bar_side: str) -> None:
    """The stored frames are landscape with a red bar along the top; the display matrix turns them a quarter turn
    (counterclockwise for +90), so the bar runs along the left (or right) side."""
    for decoder in ("linear", "sparse"):
        clip = load_video(videos[name], fps=100, min_frames=4, max_frames=4, decoder=decoder)
        last = np.asarray(clip.frames[-1], dtype=np.float64)
        assert last.shape[0] > last.shape[1]  # portrait
        quarter = last.shape[1] // 4
        red = {
            "left": (last[:, :quarter, 0] - last[:, :quarter, 2]).mean(),
            "right": (last[:, -quarter:, 0] - last[:, -quarter:, 2]).mean(),
        }
        other = "right" if bar_side == "left" else "left"
        assert red[bar_side] > red[other] + 50


def test_auto_seeks_on_sparse_sampling_and_reads_linearly_on_dense() -> None:
    data = make_h264_video_bytes(n_frames=600, fps=30, size=(64, 48), gop=15)
    duration = 20.0
    sparse = video_decode.decode_at(data, "v", [duration * (i + 0.5) / 4 for i in range(4)], "auto")
    linear = video_decode.decode_at(data, "v", [duration * (i + 0.5) / 4 for i in range(4)], "linear")
    assert sparse.decoder == "sparse" and linear.decoder == "linear"
    assert sparse.stats["decoded"] * 5 < linear.stats["decoded"]  # 4 short GOP runs vs ~525 frames
    assert sparse.timestamps == linear.timestamps
    dense = video_decode.decode_at(data, "v", [duration * (i + 0.5) / 64 for i in range(64)], "auto")
    assert dense.decoder == "linear"  # a frame in every GOP or two, no B-frames to skip: one pass is cheaper
    forced = video_decode.decode_at(data, "v", [duration * (i + 0.5) / 64 for i in range(64)], "sparse")
    assert forced.decoder == "sparse" and forced.timestamps == dense.timestamps


def test_b_frames_that_are_not_kept_are_skipped() -> None:
    """With B-frames the sparse pass skips the non-reference frames it passes over, so even a dense sampling of a
    short clip decodes fewer frames than one pass, with bit-identical frames."""
    data = make_h264_video_bytes(n_frames=300, fps=30, size=(64, 48), gop=60, bframes=3)
    instants = [10.0 * (i + 0.5) / 32 for i in range(32)]
    linear = video_decode.decode_at(data, "v", instants, "linear")
    auto = video_decode.decode_at(data, "v", instants, "auto")
    assert auto.decoder == "sparse"
    assert auto.stats["decoded"] < 0.8 * linear.stats["decoded"]
    assert auto.timestamps == linear.timestamps
    assert all(_mad(a, b) == 0 for a, b in zip(auto.images, linear.images))


class _MisSeeking:
    """A container whose seeks land two seconds past where they were asked to (a demuxer whose seeking is off):
    injected because no real file does it on demand."""

    def __init__(self, container: Any):
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def seek(self, offset: int, *, stream: Any, **kw: Any) -> None:
        self._container.seek(offset + int(2 / stream.time_base), stream=stream, **kw)


def test_a_seek_that_lands_wrong_falls_back_to_the_linear_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_h264_video_bytes(n_frames=120, gop=10, bframes=2)
    instants = [0.5, 1.5, 2.5, 3.5]
    linear = video_decode.decode_at(data, "v", instants, "linear")
    real = video_decode.open_video

    class Opener(real):  # type: ignore[misc,valid-type]
        def __enter__(self) -> Any:
            return _MisSeeking(super().__enter__())

    monkeypatch.setattr(video_decode, "open_video", Opener)
    got = video_decode.decode_at(data, "v", instants, "sparse")
    assert got.decoder == "linear"  # the table check noticed the wrong frames and the linear pass ran
    assert got.timestamps == linear.timestamps
    assert max(_mad(a, b) for a, b in zip(got.images, linear.images)) == 0


def test_pick_takes_the_nearer_frame_and_the_earlier_on_a_tie() -> None:
    times = [0.0, 1.0, 2.0]
    assert video_decode.pick(times, [-1.0, 0.5, 1.4, 1.6, 2.0, 5.0]) == [0, 0, 1, 2, 2, 2]


def test_the_config_key_reaches_the_decoder() -> None:
    from pydantic import ValidationError

    from caprl_kit.io.config import MediaConfig
    from caprl_kit.io.media import load_media

    data = make_h264_video_bytes(n_frames=300, gop=10, size=(64, 48))
    for decoder in ("linear", "sparse"):
        clip, _ = load_media(None, data, "video", MediaConfig(video_max_frames=4, video_decoder=decoder))
        assert isinstance(clip, VideoClip) and clip.meta["decoder"] == decoder
    with pytest.raises(ValidationError, match="video_decoder"):
        MediaConfig(video_decoder="fast")
    with pytest.raises(ValueError, match="unknown video decoder"):
        video_decode.decode_at(data, "v", [0.5], "fast")


def test_snap_moves_instants_to_near_keyframes_inside_their_limits() -> None:
    keys = [0.0, 2.0, 4.0, 6.0]
    # 0.4 is 0.4 from a keyframe: moves; 2.6 and 5.0 are further than the tolerance: stay
    assert video_decode.snap([0.4, 2.6, 5.0], keys, 0.5) == [0.0, 2.6, 5.0]
    assert video_decode.snap([5.0], keys, 1.0) == [4.0]  # a tie takes the earlier keyframe
    # two instants near one keyframe: only the one whose half-way limits hold it moves, so frames stay distinct
    assert video_decode.snap([1.7, 2.4], keys, 1.0) == [2.0, 2.4]
    # window limits: the keyframe at 2.0 is the first instant's nearest but in the next window
    limits = [(0.0, 2.0), (2.0, 4.0)]
    assert video_decode.snap([1.9, 2.6], keys, 1.0, limits) == [1.9, 2.0]
    assert video_decode.snap_limits([1.0, 3.0, 7.0], 0.0, 10.0) == [(0.0, 2.0), (2.0, 5.0), (5.0, 10.0)]
    assert video_decode.snap([0.4], keys, 0.0) == [0.4]


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_snapped_instants_decode_only_keyframes_and_the_linear_pass_agrees(fmt: str) -> None:
    """A keyframe-every-second B-frame video: with a 0.4 s snap every instant of a 1.25 s grid takes a keyframe;
    the sparse pass decodes those frames alone (the decoder is drained instead of fed the next packets to reorder)
    and the linear pass, snapped the same way, returns the same frames and timestamps."""
    data = make_h264_video_bytes(n_frames=300, fps=30, size=(64, 48), gop=30, bframes=3, fmt=fmt)
    instants = [10.0 * (i + 0.5) / 8 for i in range(8)]
    sparse = video_decode.decode_at(data, "v", instants, "sparse", keyframe_snap_s=0.4)
    linear = video_decode.decode_at(data, "v", instants, "linear", keyframe_snap_s=0.4)
    exact = video_decode.decode_at(data, "v", instants, "sparse")
    assert sparse.decoder == "sparse" and linear.decoder == "linear"
    assert sparse.timestamps == linear.timestamps == [1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0]
    assert all(_mad(a, b) == 0 for a, b in zip(sparse.images, linear.images))
    assert sparse.stats["fed"] == sparse.stats["decoded"] == 8  # the keyframes alone
    assert sparse.stats["snapped"] == 8 == linear.stats["snapped"]
    assert exact.stats["decoded"] > 3 * 8  # without snapping each frame needs its GOP up to it
    assert max(abs(a - b) for a, b in zip(sparse.timestamps, instants)) <= 0.4
    assert max(abs(a - b) for a, b in zip(exact.timestamps, instants)) <= 1 / 30


def test_exact_sparse_frames_come_out_without_feeding_the_reorder_delay() -> None:
    """Each seek's run stops at the last packet it needs and drains the decoder: the P-frame four after a keyframe
    (decode order I, P, B, b, b) costs those two packets, not the B-frames after it that a fed decoder needs before
    it puts the P-frame out."""
    data = make_h264_video_bytes(n_frames=300, fps=30, size=(64, 48), gop=60, bframes=3)
    instants = [2.0 + 4 / 30, 6.0 + 4 / 30]
    sparse = video_decode.decode_at(data, "v", instants, "sparse")
    linear = video_decode.decode_at(data, "v", instants, "linear")
    assert sparse.timestamps == linear.timestamps
    assert all(_mad(a, b) == 0 for a, b in zip(sparse.images, linear.images))
    assert sparse.stats["seeks"] == 2 and sparse.stats["fed"] == 2 * 2


def test_the_snap_key_reaches_the_decoder_and_the_resume_identity() -> None:
    from pydantic import ValidationError

    from caprl_kit.config import identity
    from caprl_kit.io.config import MediaConfig
    from caprl_kit.io.media import load_media

    data = make_h264_video_bytes(n_frames=300, gop=30, size=(64, 48))
    snapped, _ = load_media(None, data, "video", MediaConfig(video_max_frames=4, video_keyframe_snap_s=1.0))
    exact, _ = load_media(None, data, "video", MediaConfig(video_max_frames=4))
    assert isinstance(snapped, VideoClip) and isinstance(exact, VideoClip)
    assert snapped.meta["snapped"] == 4 and exact.meta["snapped"] == 0
    assert all(t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0) for t in snapped.timestamps)
    assert snapped.timestamps != exact.timestamps
    # other frames: a rerun with another value is a changed config, not a resume
    assert identity(MediaConfig(video_keyframe_snap_s=1.0)) != identity(MediaConfig())
    with pytest.raises(ValidationError, match="video_keyframe_snap_s"):
        MediaConfig(video_keyframe_snap_s=-1)


@pytest.mark.parametrize("k", range(1, 9))
def test_a_decoder_that_does_not_skip_runs_through_the_frames_shown_before_the_wanted_one(k: int) -> None:
    """HEVC (no non-reference skipping here) with B-frames: a frame ``k`` after a keyframe may be decoded before the
    B-frames shown ahead of it; the seek's run goes on through them before draining, since such a decoder puts out
    every frame from the keyframe on, so the sparse pass keeps its frames instead of falling back to a linear one."""
    data = make_h264_video_bytes(n_frames=300, fps=30, size=(64, 48), gop=60, bframes=4, codec="libx265")
    instants = [2.0 + k / 30, 6.0 + k / 30]
    sparse = video_decode.decode_at(data, "v", instants, "sparse")
    linear = video_decode.decode_at(data, "v", instants, "linear")
    assert sparse.decoder == "sparse" and sparse.stats["seeks"] == 2
    assert sparse.timestamps == linear.timestamps
    assert all(_mad(a, b) == 0 for a, b in zip(sparse.images, linear.images))


def test_limits_must_match_the_instants() -> None:
    data = make_h264_video_bytes(n_frames=60, gop=10)
    with pytest.raises(ValueError, match="2 limits for 3 instants"):
        video_decode.decode_at(data, "v", [0.2, 0.9, 1.5], "sparse", 0.5, [(0.0, 1.0), (1.0, 2.0)])
