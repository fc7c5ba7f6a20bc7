"""Sparse (seek-based) vs linear video decoding, exact and with keyframe snapping: time and CPU per video, frames
decoded, frame equality.

Makes 640x360 30 fps H.264 videos (libx264 veryfast, crf 23, keyframe every 2 s, B-frames as the preset gives them),
a 10-minute one and a 20 s clip of each content:

- ``still``: a still textured background with one square moving across it and changing colour. Only the square
  changes, so the frames between keyframes cost next to nothing (~300 bytes against ~65 kB per keyframe): the worst
  case for any decoder that seeks, whose cost is mostly keyframes.
- ``natural``: a slow camera pan over a textured scene with sensor grain, and the square (~0.9 Mbit/s; keyframes
  ~12x the size of the other frames, as in 360p footage).

Each is loaded through ``load_video`` (annotate's media path: decode, sample, resize to ``media.video_max_pixels``)
with 32 and 128 sampled frames under each ``media.video_decoder``, and with ``media.video_keyframe_snap_s`` 1.0:

    .venv/bin/python benchmarks/video_decode.py                      # videos made in a temp dir
    .venv/bin/python benchmarks/video_decode.py --workdir DIR        # made once, reused by later runs
    .venv/bin/python benchmarks/video_decode.py --repeats 2 --json out.json --content natural

Prints a Markdown table: wall seconds and CPU seconds per video (best of ``--repeats``; CPU is the whole process,
the decoder's threads included), frames decoded, the speed-up over the exact linear pass, how the frames compare
with the linear decoder's at the same instants (largest mean absolute pixel difference, largest timestamp
difference), and how far the frames' timestamps moved from the exact ones (snapping).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SNAP_S = 1.0  # a keyframe every 2 s: every instant is within 1 s of one


def make_video(
    path: Path,
    seconds: float,
    content: str = "still",
    fps: int = 30,
    size: tuple[int, int] = (640, 360),
    preset: str = "veryfast",
):
    """``content`` (``still`` or ``natural``, see above) with a square moving across it and changing colour;
    keyframe every 2 s."""
    import av
    import numpy as np

    w, h = size
    rng = np.random.default_rng(0)
    if content == "still":
        yy, xx = np.mgrid[0:h, 0:w]
        scene = np.stack([xx * 0.35, yy * 0.6, (xx + yy) * 0.1], axis=-1).astype(np.uint8)
        scene += rng.integers(0, 24, (h, w, 1), dtype=np.uint8)  # texture: not trivially coded
        grain = None
    else:
        cw, ch = 2 * w, 2 * h  # the scene the camera pans over
        yy, xx = np.mgrid[0:ch, 0:cw]
        scene = np.stack(
            [
                128 + 60 * np.sin(xx / 37.0) + 30 * np.cos(yy / 23.0),
                128 + 50 * np.sin((xx + yy) / 51.0),
                100 + 80 * np.cos(xx / 97.0 - yy / 71.0),
            ],
            axis=-1,
        )
        for _ in range(400):  # objects: edges and flat regions
            x0, y0 = rng.integers(0, cw - 60), rng.integers(0, ch - 60)
            scene[y0 : y0 + rng.integers(8, 60), x0 : x0 + rng.integers(8, 60)] = rng.integers(0, 256, 3)
        scene = np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)
        grain = rng.normal(0, 5, (16, h, w, 1)).astype(np.int16)  # sensor noise, other in each frame
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": preset, "crf": "23", "g": str(2 * fps), "sc_threshold": "0"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            if grain is None:
                arr = scene.copy()
                y = int((h - 80) * (0.5 + 0.4 * np.sin(i / 20)))
            else:
                px = int((scene.shape[1] - w) * (0.5 + 0.5 * np.sin(i / 150)))  # ~2 px per frame
                py = int((scene.shape[0] - h) * (0.5 + 0.5 * np.sin(i / 230)))
                arr = np.clip(scene[py : py + h, px : px + w].astype(np.int16) + grain[i % 16], 0, 255).astype(np.uint8)
                y = 120
            x = (i * 4) % (w - 80)
            arr[y : y + 80, x : x + 80] = ((i * 7) % 256, 200, 255 - (i * 3) % 256)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def measure(data: bytes, n: int, decoder: str, repeats: int, snap: float = 0.0):
    from caprl_kit.io.media import load_video

    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        clip = load_video(data, fps=1000.0, min_frames=n, max_frames=n, decoder=decoder, keyframe_snap_s=snap)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu, clip)
    assert best is not None
    return best


def compare(a, b) -> tuple[float, float]:
    import numpy as np

    mad = max(
        float(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)).mean())
        for x, y in zip(a.frames, b.frames)
    )
    return mad, max(abs(s - t) for s, t in zip(a.timestamps, b.timestamps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="where the videos are made (and reused); default: a temp dir")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per cell")
    ap.add_argument("--frames", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--content", nargs="+", default=["still", "natural"], choices=["still", "natural"])
    ap.add_argument("--long-s", type=float, default=600.0, help="length of the long video in seconds")
    ap.add_argument("--clip-s", type=float, default=20.0)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="caprl-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    videos = {}
    for content in args.content:
        for seconds in (args.long_s, args.clip_s):
            length = f"{seconds / 60:g}-minute" if seconds >= 60 else f"{seconds:g} s clip"
            path = work / f"h264_640x360_30fps_g60_{content}_{seconds:g}s.mp4"
            if not path.exists():
                t0 = time.perf_counter()
                make_video(path, seconds, content)
                print(f"made {path.name} in {time.perf_counter() - t0:.0f} s")
            videos[f"{length}, {content}"] = path.read_bytes()

    cells = [("linear", 0.0), ("sparse", 0.0), ("auto", 0.0), ("sparse", SNAP_S), ("auto", SNAP_S)]
    rows = []
    print(
        "| video | frames | decoder | wall s | CPU s | frames decoded | speed-up (wall / CPU) "
        "| vs linear at the same instants: MAD, max Δt s | moved from exact: max s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, data in videos.items():
        for n in args.frames:
            base = measure(data, n, "linear", args.repeats)
            snapped_linear = measure(data, n, "linear", 1, SNAP_S)[2]  # the reference for the snapped cells
            for decoder, snap in cells:
                wall, cpu, clip = (
                    base if (decoder, snap) == ("linear", 0.0) else measure(data, n, decoder, args.repeats, snap)
                )
                mad, dt = compare(clip, snapped_linear if snap else base[2])
                moved = max(abs(s - t) for s, t in zip(clip.timestamps, base[2].timestamps))
                row = {
                    "video": label,
                    "frames": n,
                    "decoder": decoder,
                    "keyframe_snap_s": snap,
                    "used": clip.meta["decoder"],
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "decoded_frames": clip.meta.get("decoded_frames"),
                    "snapped": clip.meta.get("snapped", 0),
                    "speedup_wall": round(base[0] / wall, 1),
                    "speedup_cpu": round(base[1] / cpu, 1),
                    "pixel_mad": round(mad, 3),
                    "max_dt_s": round(dt, 4),
                    "moved_s": round(moved, 3),
                }
                rows.append(row)
                name = decoder if decoder != "auto" else f"auto ({row['used']})"
                if snap:
                    name += f", snap {snap:g} s"
                print(
                    f"| {label} | {n} | {name} | {wall:.2f} | {cpu:.2f} | {row['decoded_frames']} | "
                    f"{row['speedup_wall']}x / {row['speedup_cpu']}x | {mad:.3f}, {dt:.3f} | {moved:.2f} |",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
