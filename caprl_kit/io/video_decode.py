"""Decoding the frames of a video nearest to given instants, with PyAV: one linear pass, or seeks (sparse).

The rule that picks frames is the linear decoder's: frames are read in presentation order, and each instant takes
the nearer of the last frame before it and the first frame at or after it (the earlier one on a tie); instants
past the last frame take the last frame.

**Linear** decodes every frame from the start up to the last one needed: a 20 s clip costs ~600 frame decodes
whatever the number sampled, a 10-minute one ~18,000.

**Sparse** first reads the packet table (a demux pass without decoding: presentation timestamps, keyframes, decode
order), picks the frames by the rule above on those timestamps, then for each picked frame seeks to the keyframe
before it and decodes forward only to it; a picked frame that decoding on from the previous one reaches sooner
than a seek is decoded by continuing (several frames in one GOP, short clips). Where the codec allows it (H.264,
MPEG-4 Part 2, MPEG-1/2) the decoder skips the non-reference frames it passes over: no other frame is predicted
from them, so the kept frames are bit-identical, and a B-frame stream decodes about half its frames. Each seek's run
stops at the last packet it needs and drains the decoder, instead of feeding it the packets after that it would
otherwise hold frames back for (the reordering delay of a B-frame stream).

Every frame decoded after a seek is checked against the table (the keyframe first, then each frame in
presentation order); a mismatch, an error or a seek that lands after the keyframe abandons the sparse pass and the
linear one runs instead, so a file gets the linear decoder's frames either way. Sparse is not tried where seeking
cannot be relied on: packets without timestamps (raw ``.h264`` streams), repeated timestamps, a stream whose first
packet is not a keyframe. A damaged file ends in the linear pass, with its result or its ``MediaError``.

``auto`` (``media.video_decoder``) decides by an estimate of decoded frames: the sparse plan's (frames from each
keyframe or the previous picked frame to the next picked one, B-frames at half where they are skipped, a few per
seek) against the linear pass's (every frame up to the last picked one); sparse runs where it decodes at most
``SPARSE_SHARE`` of them. So long videos are decoded sparsely, and a stream of tiny GOPs or a dense sampling
without B-frames to skip in one pass.

**Keyframe snapping** (``keyframe_snap_s``, ``media.video_keyframe_snap_s``; off by default) moves each instant
to the nearest keyframe within that many seconds, never past half-way to its neighbours or out of its window: a
keyframe is decoded alone, so a snapped frame costs one decode after a seek instead of its GOP up to the instant.
At 128 frames of a 10-minute video, half a GOP per frame is what an exact sparse pass cannot avoid (~4.7 s between
frames against ~1 s of decoding from the keyframe). The frames still carry their own timestamps, and both decoders
snap the same way (the keyframe times come from the packet table), so sparse and linear still agree.

Frames are turned upright by the stream's display matrix (a phone video recorded in portrait), on both paths, as
``load_image`` applies EXIF orientation.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from PIL import Image

from caprl_kit.errors import MediaError
from caprl_kit.log import get_logger

log = get_logger(__name__)

DECODERS = ("auto", "sparse", "linear")
#: a seek (demuxer repositioning, decoder flush) counted as this many frame decodes in the plan's cost
SEEK_COST_FRAMES = 5
#: decoders that skip a non-reference frame when asked, packet by packet (``skip_frame``): the sparse pass asks
#: for every frame it does not keep (not HEVC: its sub-layer non-reference pictures may be references of a
#: higher temporal layer)
SKIPS_NONREF = frozenset({"h264", "mpeg4", "mpeg2video", "mpeg1video"})
#: a B-frame in the plan's cost where the decoder skips non-reference frames (about half the B-frames of a
#: B-pyramid are references)
SKIPPED_B_COST = 0.5
#: ``auto`` decodes sparsely when its plan decodes at most this share of the linear pass's frames
SPARSE_SHARE = 0.8
_DEFAULT_FRAME_S = 1 / 25  # a frame without a timestamp in the linear pass: this long after the previous one


@dataclass
class DecodedFrames:
    """The picked frames (one per instant, upright RGB-or-other PIL images), when they are shown (seconds), and
    which decoder made them (``sparse`` or ``linear``)."""

    images: list[Image.Image]
    timestamps: list[float]
    decoder: str
    stats: dict[str, Any] = field(default_factory=dict)


def decode_at(
    data: bytes,
    source: str,
    instants: list[float],
    decoder: str = "auto",
    keyframe_snap_s: float = 0.0,
    limits: list[tuple[float, float]] | None = None,
) -> DecodedFrames:
    """The frames of ``data``'s first video stream nearest to ``instants`` (sorted, seconds). ``decoder``: ``auto``,
    ``sparse`` (wherever it can be relied on, whatever the estimate) or ``linear``. ``keyframe_snap_s`` > 0: each
    instant first moves to the nearest keyframe within that many seconds and within its ``limits`` (``snap``;
    default: half-way to the neighbouring instants). Raises ``MediaError``."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown video decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if keyframe_snap_s < 0:
        raise ValueError(f"keyframe_snap_s must be >= 0, not {keyframe_snap_s}")
    if limits is not None and len(limits) != len(instants):
        raise ValueError(f"{len(limits)} limits for {len(instants)} instants: one (lo, hi) per instant")
    stats: dict[str, Any] = {}
    got = None
    if decoder != "linear" or keyframe_snap_s > 0:
        with open_video(data, source) as container:
            table = _read_table(container, source)
            if table is not None and keyframe_snap_s > 0:
                moved = snap(instants, table.key_times, keyframe_snap_s, limits)
                stats["snapped"] = sum(a != b for a, b in zip(moved, instants))
                instants = moved
            if decoder != "linear" and table is not None:
                got = _sparse(container, table, instants, force=decoder == "sparse", source=source)
    if got is None:
        with open_video(data, source) as container:
            got = _linear(container, instants, source)
    got.stats.update(stats)
    return got


def snap_limits(instants: list[float], lo: float = -math.inf, hi: float = math.inf) -> list[tuple[float, float]]:
    """Where each of ``instants`` (sorted) may move to: from half-way to the previous one (or ``lo``) up to, not
    including, half-way to the next one (or ``hi``), so that instants moved to keyframes stay distinct and in
    order, and inside ``[lo, hi)`` (a window's span)."""
    mids = [(a + b) / 2 for a, b in itertools.pairwise(instants)]
    return list(zip([lo, *(max(lo, m) for m in mids)], [*(min(hi, m) for m in mids), hi]))


def snap(
    instants: list[float], keys: list[float], tolerance_s: float, limits: list[tuple[float, float]] | None = None
) -> list[float]:
    """``instants`` with each moved to the nearest of ``keys`` (sorted keyframe times; the earlier on a tie) that
    is at most ``tolerance_s`` away and inside its limits (``snap_limits(instants)`` by default); an instant
    without such a keyframe stays where it is. Decoding a keyframe needs no other frame: one decode after a seek,
    instead of the GOP up to the instant."""
    out = []
    for t, (lo, hi) in zip(instants, limits or snap_limits(instants)):
        i = bisect.bisect_left(keys, t)
        near = [k for k in keys[max(i - 1, 0) : i + 1] if abs(k - t) <= tolerance_s and lo <= k < hi]
        out.append(min(near, key=lambda k: (abs(k - t), k)) if near else t)
    return out


class open_video:  # noqa: N801  # a context manager used as a function, like ``open``
    """The container of ``data`` with a video stream (``MediaError`` otherwise), closed on exit."""

    def __init__(self, data: bytes, source: str):
        self.data, self.source = data, source

    def __enter__(self) -> Any:
        import av

        try:
            self.container = av.open(io.BytesIO(self.data))
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise MediaError("failed_to_decode", self.source, f"not a readable video: {exc}") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError("no_frames", self.source, "the file has no video stream")
        return self.container

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def upright(frame: Any) -> Image.Image:
    """A decoded frame as an RGB PIL image, turned by its display matrix (a multiple of 90 degrees). (Through
    ``to_ndarray``: the same pixels as ``to_image``, whose copy row by row costs more than the conversion.)"""
    img = Image.fromarray(frame.to_ndarray(format="rgb24"))
    try:
        turn = round((frame.rotation or 0) / 90) % 4  # counterclockwise quarter turns
    except (ValueError, TypeError):  # a malformed display matrix: shown as stored
        turn = 0
    if turn:
        img = img.transpose(
            (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[turn - 1]
        )
    return img


def _linear(container: Any, instants: list[float], source: str) -> DecodedFrames:
    """One streaming pass from the start: each instant takes the nearer of the frames just before and at/after it;
    a decode error ends the pass (the frames so far stand), a stream that ends early repeats its last frame."""
    import av

    stream = container.streams.video[0]
    picked: list[Image.Image] = []
    stamps: list[float] = []
    prev: tuple[float, Any] | None = None
    decoded = 0
    j = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            t = float(frame.time) if frame.time is not None else (prev[0] + _DEFAULT_FRAME_S if prev else 0.0)
            while j < len(instants) and t >= instants[j]:
                use_prev = prev is not None and abs(prev[0] - instants[j]) <= abs(t - instants[j])
                chosen_t, chosen = prev if use_prev else (t, frame)  # type: ignore[misc]  # prev is set once a frame was seen
                picked.append(upright(chosen))
                stamps.append(round(chosen_t, 3))
                j += 1
            prev = (t, frame)
            if j == len(instants):
                break
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        if prev is None:
            raise MediaError("no_frames", source, f"no decodable frames (decoder: {exc})") from None
    if prev is None:
        raise MediaError("no_frames", source, "no decodable frames")
    if j < len(instants):  # the stream ended early: the last frame stands in
        last = upright(prev[1])
        picked.extend([last] * (len(instants) - j))
        stamps.extend([round(prev[0], 3)] * (len(instants) - j))
    return DecodedFrames(picked, stamps, "linear", {"decoded": decoded})


@dataclass
class _Table:
    """A video stream's packets: presentation timestamps in presentation order, and for each its keyframe to seek
    to and its place in decode order."""

    pts: list[int]  # sorted presentation timestamps of the frames the decoder outputs
    times: list[float]  # the same in seconds
    decode_index: dict[int, int]  # pts -> position in decode order
    keyframe: dict[int, int]  # pts -> pts of the keyframe a decode must start from to reach it
    reordered: list[int]  # reordered[i]: how many of the first i packets in decode order are B-frames (shown
    # before a frame decoded ahead of them), the frames a skipping decoder may pass over

    @cached_property
    def position(self) -> dict[int, int]:
        """pts -> its index in presentation order."""
        return {p: i for i, p in enumerate(self.pts)}

    @property
    def key_times(self) -> list[float]:
        """When each keyframe (a frame decoded without any other) is shown, in seconds, ascending."""
        return [t for p, t in zip(self.pts, self.times) if self.keyframe[p] == p]


def _packet_table(container: Any) -> _Table | None:
    """The stream's packet table from one demux pass, or None where seeking cannot be relied on (a packet without
    a timestamp, a repeated timestamp, a first packet that is not a keyframe, no packets)."""
    stream = container.streams.video[0]
    order: list[tuple[int, bool, bool]] = []  # (pts, keyframe, discarded) in decode order
    for packet in container.demux(stream):
        pts = packet.pts
        if pts is None:
            if packet.size == 0:  # the flush packet at the end
                continue
            return None
        order.append((pts, packet.is_keyframe, packet.is_discard))
    if not order or not order[0][1]:
        return None
    shown = sorted(pts for pts, _, discarded in order if not discarded)
    if not shown or len(set(shown)) != len(shown):
        return None
    decode_index = {pts: i for i, (pts, _, _) in enumerate(order)}
    reordered = [0]
    ahead = order[0][0]
    for pts, _, _ in order:
        reordered.append(reordered[-1] + (pts < ahead))
        ahead = max(ahead, pts)
    keyframe: dict[int, int] = {}
    keys: list[int] = []  # keyframe pts seen so far, in decode order
    for pts, key, _ in order:
        if key:
            keys.append(pts)
        # the last keyframe in decode order at or before this frame that is not after it in presentation order
        # (a leading picture of an open GOP needs the keyframe before its own)
        if pts >= keys[-1]:
            keyframe[pts] = keys[-1]
        else:
            start = next((k for k in reversed(keys) if k <= pts), None)
            if start is None:
                return None
            keyframe[pts] = start
    num, den = stream.time_base.numerator, stream.time_base.denominator
    times = [float(p) * num / den for p in shown]  # as PyAV's ``frame.time`` computes it, to the last bit
    return _Table(shown, times, decode_index, keyframe, reordered)


def pick(times: list[float], instants: list[float]) -> list[int]:
    """Index into ``times`` (sorted) of the frame each instant takes: the nearer of the last frame before it and
    the first at or after it, the earlier on a tie; the last frame for an instant past the end."""
    out = []
    for t in instants:
        i = bisect.bisect_left(times, t)
        if i == len(times):
            out.append(len(times) - 1)
        elif i > 0 and abs(times[i - 1] - t) <= abs(times[i] - t):
            out.append(i - 1)
        else:
            out.append(i)
    return out


def _plan(table: _Table, wanted: list[int], skips: bool) -> tuple[list[tuple[int, bool]], float, int]:
    """For each wanted pts (ascending): whether to seek to its keyframe or decode on from the previous one, by
    the fewer frame decodes; the plan's estimated decodes and the linear pass's. ``skips``: the decoder passes over
    non-reference frames, counted as ``SKIPPED_B_COST`` of a decode for each B-frame (some B-frames are
    references: a B-pyramid)."""

    def work(first: int, last: int) -> float:  # decoding packets first..last (decode order)
        if last < first:
            return 0.0
        skippable = table.reordered[last + 1] - table.reordered[first] if skips else 0
        return last - first + 1 - (1 - SKIPPED_B_COST) * skippable

    steps: list[tuple[int, bool]] = []
    cost = 0.0
    fed = -1  # decode-order position reached
    for pts in wanted:
        at = table.decode_index[pts]
        start = table.decode_index[table.keyframe[pts]]
        on = work(fed + 1, at) if fed >= 0 else None  # decoding on from where the last step stopped
        seek = work(start, at) + SEEK_COST_FRAMES
        if on is not None and on <= seek:
            steps.append((pts, False))
            cost += on
        else:
            steps.append((pts, True))
            cost += seek
        fed = max(fed, at)
    linear = max(table.decode_index[p] for p in wanted) + 1
    return steps, cost, linear


def _decode_from_here(
    container: Any, stream: Any, want: set[int] | None, end: int, counts: dict[str, int]
) -> Iterator[Any]:
    """Frames decoded from the container's position on, up to the packet with pts ``end``; then the decoder is
    drained (the frames it holds back to reorder come out without feeding it the packets after ``end``: its next
    use is after a seek). ``want``: the decoder skips every non-reference frame except these (nothing refers to a
    non-reference frame, so the frames kept come out the same). ``counts["fed"]``: packets given to the decoder."""
    codec = stream.codec_context
    mode = ""
    for packet in container.demux(stream):
        if packet.pts is None:  # the flush packet at the end of the stream
            break
        counts["fed"] += 1
        if want is not None:
            wanted = packet.pts in want
            if mode != ("DEFAULT" if wanted else "NONREF"):
                mode = "DEFAULT" if wanted else "NONREF"
                codec.skip_frame = mode
        yield from packet.decode()
        if packet.pts == end:
            break
    yield from codec.decode(None)


def _segment_ends(table: _Table, steps: list[tuple[int, bool]], skips: bool) -> list[int]:
    """For each step, the pts of the last packet in decode order its segment (a seek and the steps decoding on
    from it) needs: where that segment's decoding stops and the decoder is drained. A decoder that skips
    non-reference frames needs the wanted frames' packets (the frames shown between them that are decoded later are
    non-reference or not needed); one that does not puts out every frame from the keyframe on, so the segment runs
    through all the frames shown up to its last wanted one (a B-frame shown before a wanted P-frame is decoded
    after it)."""
    position = table.position
    ends: list[int] = []
    start = 0
    for i in range(len(steps) + 1):
        if i == len(steps) or (i > start and steps[i][1]):
            needed = [p for p, _ in steps[start:i]]
            if not skips:
                first = position[table.keyframe[needed[0]]]
                needed = table.pts[first : max(position[p] for p in needed) + 1]
            ends.extend([max(needed, key=table.decode_index.__getitem__)] * (i - start))
            start = i
    return ends


class _Mismatch(Exception):
    """The sparse pass saw frames other than the table says: the linear pass decides."""


def _read_table(container: Any, source: str) -> _Table | None:
    """``_packet_table``, or None (logged) where the file cannot be read so or seeking cannot be relied on."""
    import av

    try:
        table = _packet_table(container)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        log.debug("%s: linear decode (packet table unreadable: %s)", source, exc)
        return None
    if table is None:
        log.debug("%s: linear decode (no reliable timestamps for seeking)", source)
    return table


def _sparse(container: Any, table: _Table, instants: list[float], force: bool, source: str) -> DecodedFrames | None:
    """Seek-based decoding of the picked frames, or None where the linear pass must run (not cheaper when
    ``force`` is off, or the decode disagreed with ``table``, the container's packet table)."""
    import av

    stream = container.streams.video[0]
    picks = pick(table.times, instants)
    wanted = sorted({table.pts[i] for i in picks})
    skips = stream.codec_context.name in SKIPS_NONREF
    steps, cost, linear = _plan(table, wanted, skips)
    if not force and cost > SPARSE_SHARE * linear:
        log.debug("%s: linear decode (plan %.0f frame decodes vs %d linear)", source, cost, linear)
        return None
    want = set(wanted)
    position = table.position
    got: dict[int, tuple[Image.Image, float]] = {}
    decoded = seeks = 0
    counts = {"fed": 0}
    frames: Any = None
    key = last = 0  # the keyframe of the last seek; the presentation index of the last frame that came out
    started = False  # whether that keyframe came out (frames before it are passed over, every frame after checked)
    ends = _segment_ends(table, steps, skips)
    try:
        for (pts, seek), end in zip(steps, ends):
            if seek or frames is None:
                key = table.keyframe[pts]
                container.seek(key, stream=stream, backward=True, any_frame=False)
                frames = _decode_from_here(container, stream, want if skips else None, end, counts)
                seeks += 1
                started = False
            while pts not in got:
                frame = next(frames, None)
                if frame is None:
                    raise _Mismatch(f"the stream ended before pts {pts}")
                decoded += 1
                if frame.pts is None:
                    raise _Mismatch("a decoded frame has no timestamp")
                if not started:
                    if frame.pts < key:  # the seek landed on an earlier keyframe, or a leading picture
                        continue
                    if frame.pts != table.pts[bisect.bisect_left(table.pts, key)]:
                        raise _Mismatch(f"the seek to keyframe pts {key} came out at pts {frame.pts}")
                    started, last = True, position[frame.pts] - 1
                # each frame is the table's next one (a skipped non-reference frame may be missing)
                at = position.get(frame.pts, -1)
                if at <= last or (at != last + 1 and not skips):
                    raise _Mismatch(f"decoded pts {frame.pts} after {table.pts[last]}: not the table's order")
                last = at
                if frame.pts in want:
                    got[frame.pts] = (upright(frame), table.times[at])
    except (_Mismatch, av.error.FFmpegError, ValueError, OSError) as exc:
        log.debug("%s: linear decode (sparse decode stopped: %s)", source, exc)
        return None
    images = [got[table.pts[i]][0] for i in picks]
    stamps = [round(got[table.pts[i]][1], 3) for i in picks]
    return DecodedFrames(
        images,
        stamps,
        "sparse",
        {"decoded": decoded, "fed": counts["fed"], "seeks": seeks, "planned": round(cost), "linear_estimate": linear},
    )
