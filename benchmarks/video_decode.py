"""Sparse (seek-based) vs linear video decoding: time and CPU per video, frames decoded, frame equality.

Makes two 640x360 30 fps H.264 videos (libx264, keyframe every 2 s, B-frames as the preset gives them): a 10-minute
one and a 20 s clip, then loads each through ``load_video`` (annotate's media path: decode, sample, resize to
``media.video_max_pixels``) with 32 and 128 sampled frames under each ``media.video_decoder``:

    .venv/bin/python benchmarks/video_decode.py                      # videos made in a temp dir
    .venv/bin/python benchmarks/video_decode.py --workdir DIR        # made once, reused by later runs
    .venv/bin/python benchmarks/video_decode.py --repeats 2 --json out.json

Prints a Markdown table: wall seconds and CPU seconds per video (best of ``--repeats``; CPU is the whole process,
the decoder's threads included), frames decoded, the speed-up over linear, and how the frames compare with the
linear decoder's (largest mean absolute pixel difference, largest timestamp difference).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def make_video(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (640, 360), preset: str = "veryfast"):
    """A textured gradient with a square moving across it and changing colour; keyframe every 2 s."""
    import av
    import numpy as np

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 0.35, yy * 0.6, (xx + yy) * 0.1], axis=-1).astype(np.uint8)
    base += np.random.default_rng(0).integers(0, 24, (h, w, 1), dtype=np.uint8)  # texture: not trivially coded
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": preset, "crf": "23", "g": str(2 * fps), "sc_threshold": "0"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            arr = base.copy()
            x = (i * 4) % (w - 80)
            y = int((h - 80) * (0.5 + 0.4 * np.sin(i / 20)))
            arr[y : y + 80, x : x + 80] = ((i * 7) % 256, 200, 255 - (i * 3) % 256)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def measure(data: bytes, n: int, decoder: str, repeats: int):
    from caprl_kit.io.media import load_video

    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        clip = load_video(data, fps=1000.0, min_frames=n, max_frames=n, decoder=decoder)
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
    ap.add_argument("--long-s", type=float, default=600.0, help="length of the long video in seconds")
    ap.add_argument("--clip-s", type=float, default=20.0)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="caprl-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    videos = {}
    for label, seconds in ((f"{args.long_s / 60:g}-minute", args.long_s), (f"{args.clip_s:g} s clip", args.clip_s)):
        path = work / f"h264_640x360_30fps_g60_{seconds:g}s.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            make_video(path, seconds)
            print(f"made {path.name} in {time.perf_counter() - t0:.0f} s")
        videos[label] = path.read_bytes()

    rows = []
    print(
        "| video | frames | decoder | wall s | CPU s | frames decoded | speed-up (wall / CPU) | vs linear: pixel MAD, max Δt s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, data in videos.items():
        for n in args.frames:
            base = measure(data, n, "linear", args.repeats)
            for decoder in ("linear", "sparse", "auto"):
                wall, cpu, clip = base if decoder == "linear" else measure(data, n, decoder, args.repeats)
                mad, dt = compare(clip, base[2])
                row = {
                    "video": label,
                    "frames": n,
                    "decoder": decoder,
                    "used": clip.meta["decoder"],
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "decoded_frames": clip.meta.get("decoded_frames"),
                    "speedup_wall": round(base[0] / wall, 1),
                    "speedup_cpu": round(base[1] / cpu, 1),
                    "pixel_mad": round(mad, 3),
                    "max_dt_s": round(dt, 4),
                }
                rows.append(row)
                name = decoder if decoder != "auto" else f"auto ({row['used']})"
                print(
                    f"| {label} | {n} | {name} | {wall:.2f} | {cpu:.2f} | {row['decoded_frames']} | "
                    f"{row['speedup_wall']}x / {row['speedup_cpu']}x | {mad:.3f}, {dt:.3f} |",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
