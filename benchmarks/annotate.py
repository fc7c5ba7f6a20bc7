"""caprl annotate throughput and memory, measured side by side in one run on the tiny captioner.

    .venv/bin/python benchmarks/annotate.py speed  [--n 192]                 # (a) items/s: ours vs raw engine vs naive loop
    .venv/bin/python benchmarks/annotate.py memory [--sizes 10000 100000] [--runner ray]
                                                                   # (b) peak RSS vs input size
    .venv/bin/python benchmarks/annotate.py memory-media [--photos 30 300] [--videos 20 100]
                                                                   # (c) peak RSS vs shard size, real-size media
    .venv/bin/python benchmarks/annotate.py openai-gpu [--n 768]            # (d) openai path vs a GPU-timed server
    .venv/bin/python benchmarks/annotate.py vllm [--n 256]                  # (e) vllm back end vs the same engine
    .venv/bin/python benchmarks/annotate.py embedded [--n 2000]             # (f) the driver's side of embedded media

(a) ours = the full pipeline (folder listing, background decoding, adaptive batches, Parquet shards + sidecars);
    raw = ``backend.generate`` alone on pre-decoded images in batches of the same size (no I/O at all);
    naive = a sequential loop: decode one image, generate for it, keep the row, write one Parquet at the end.
(b) each size runs in a fresh process: a JSONL manifest of N rows (over a few image files), 1 generated token per
    item, so the pipeline's own memory behaviour is what is measured. ``--runner ray`` (2 workers on a local Ray
    instance): the peak RSS is the driver's alone (the process that lists, cuts and hands out shards; the workers
    are Ray actor processes).
(c) each size runs in a fresh process: N real-size media files in ONE shard (``sharding.shard_size`` >= N), the
    transformers back end on the tiny captioner, ``max_tokens`` 4, default ``media`` settings (images resized to
    ``max_pixels`` 1003520; videos 2 fps, 32 frames of at most 200704 pixels) and default ``batching`` (``window``
    16, ``decode_workers`` 2) unless ``--window`` / ``--decode-workers`` / ``--batch`` say otherwise.
    Photos: 1600x1200 JPEG (gradients + noise, ~0.6 MB); videos: 20 s, 640x360, 30 fps H.264 MP4 (~0.7 MB). One
    file of each is generated and hard-linked N times (``output.dedup`` is off, so identical bytes are all
    captioned), cached under ``$TMPDIR/caprl-bench-media``. Reports the child's peak RSS (``ru_maxrss``), its RSS
    sampled every 0.1 s (``--trace`` prints the samples) and the ratio largest/smallest size per kind; the
    acceptance of issue 13 is <= 1.3x for 300 vs 30 photos and 100 vs 20 videos. Decoded media held at once is
    about min(N, 2 x window) items (the back end's sort window + the decode look-ahead), 2.8 MiB per photo and
    18 MiB per video: measured 2 CPUs, batch 8: window 256 -> 1.97x / 2.00x; ``--window 16`` -> 1.06x / 1.17x.
(d) openai-gpu runs benchmarks/stream.py (its --help has the details): annotate and curate-generate through the
    openai back end against benchmarks/gpu_timing_server.py, a MEASURING INSTRUMENT emulating a GPU engine's decode
    timing (continuous batching, fixed step time, seeded lognormal lengths, real HTTP), as a ratio to the server's
    capacity, beside the batch-synchronous figure (a barrier per batch) and a raw stream.
(e) vllm runs benchmarks/annotate_vllm.py in the vLLM environment (.venv-vllm, or $CAPRL_VLLM_PYTHON): caprl annotate
    with the vllm back end and the shipped recipe's settings vs the same engine given the whole pre-decoded queue
    and vs waves of batch_size (its --help has the details).
(f) the driver's side of inputs that embed their media: a WebDataset tar and a Parquet manifest (``bytes_column``)
    of N real-size photos (the 1600x1200 JPEG of (c), ~0.6 MB, each copy with a distinct trailing byte). Each format
    is listed in a fresh process (``iter_items``, what the driver does for the fingerprint and again for the run)
    and reports the listing's seconds, peak RSS, bytes the process read (``rchar``) and the pickled size of one
    shard of ``sharding.shard_size`` (1000) items, i.e. what the driver hands to a worker (multiprocess / Ray).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def tiny_captioner(root: Path) -> str:
    from caprl_kit.models.tiny import build_tiny_models

    return str(build_tiny_models(root / "models")["captioner"])


def speed(n: int, batch: int, max_tokens: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run
    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request, SamplingParams
    from caprl_kit.backends.config import BackendConfig
    from caprl_kit.io.media import load_image
    from caprl_kit.synthetic import write_scenes

    root = Path(tempfile.mkdtemp(prefix="caprl-bench-annotate-"))
    model = tiny_captioner(root)
    images = root / "images"
    write_scenes(images, n, size=224)
    files = sorted(images.glob("*.png"))
    sampling = {"n": 1, "temperature": 0.0, "max_tokens": max_tokens}
    backend_cfg = BackendConfig(name="transformers", model=model, batch_size=batch, sampling=sampling)
    backend = build_backend(backend_cfg)
    prompt = "Please describe this image in detail."
    s = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    backend.generate([Request.user(prompt, images=[load_image(files[0]).image], sampling=s)])  # warm-up

    # raw engine on pre-decoded inputs (measured before and after the others; the faster run counts)
    decoded = [load_image(f).image for f in files]

    def raw() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            backend.generate([Request.user(prompt, images=[im], sampling=s) for im in decoded[i : i + batch]])
        return time.perf_counter() - t0

    raw_s = raw()

    # naive sequential loop
    t0 = time.perf_counter()
    rows = []
    for f in files:
        (resp,) = backend.generate([Request.user(prompt, images=[load_image(f).image], sampling=s)])
        rows.append({"key": f.name, "caption": resp.text})
    pq.write_table(pa.Table.from_pylist(rows), root / "naive.parquet")
    naive_s = time.perf_counter() - t0

    # ours, end to end (includes listing, fingerprinting, model load, writing shards)
    cfg = AnnotateConfig(input={"path": str(images)}, backend=backend_cfg.model_dump(),
                         sharding={"shard_size": 64}, output_dir=str(root / "ours"))
    t0 = time.perf_counter()
    report = run(cfg)
    ours_s = time.perf_counter() - t0
    assert report.n_ok == n, report.status_counts
    raw_s = min(raw_s, raw())
    from caprl_kit.io.rundir import RunDir
    from caprl_kit.schemas import AnnotationRow

    stats = RunDir(str(root / "ours"), AnnotationRow).read_stats()
    shard_s = sum(st.duration_s for st in stats)  # inside the shards: excludes start-up (imports, model load, listing)
    return {"items": n,
            "ours_steady_items_per_s": n / shard_s, "ours_steady_vs_raw": raw_s / shard_s, "batch_size": batch, "max_tokens": max_tokens,
            "ours_items_per_s": n / ours_s, "raw_engine_items_per_s": n / raw_s, "naive_items_per_s": n / naive_s,
            "ours_vs_raw": raw_s / ours_s, "ours_vs_naive": naive_s / ours_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory_child(n: int, runner: str = "local") -> dict:
    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run
    from caprl_kit.synthetic import write_scenes

    root = Path(tempfile.mkdtemp(prefix=f"caprl-bench-mem-{n}-"))
    model = tiny_captioner(root)
    write_scenes(root / "images", 8, size=56)
    files = sorted((root / "images").glob("*.png"))
    with open(root / "manifest.jsonl", "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"path": str(files[i % len(files)]), "id": f"item-{i:07d}"}) + "\n")
    cfg = AnnotateConfig(
        input={"path": str(root / "manifest.jsonl"), "key_column": "id"},
        backend={"name": "transformers", "model": model, "batch_size": 256,
                 "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 1}},
        media={"max_pixels": 3136},
        sharding={"shard_size": 1000},
        batching={"window": 1000},
        runner={"name": runner, "num_workers": 2 if runner != "local" else 1},
        output_dir=str(root / "out"),
    )
    t0 = time.perf_counter()
    report = run(cfg)
    return {"items": n, "runner": runner, "ok": report.n_ok, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


MEDIA_CACHE = Path(tempfile.gettempdir()) / "caprl-bench-media"


def _make_photo(path: Path) -> None:
    """A 1600x1200 photo-like JPEG: smooth gradients, low-frequency blobs and sensor-like noise (~0.6 MB)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = 1600, 1200
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200 + 30 * np.sin(y / 70), y / h * 180 + 40 * np.cos(x / 90),
                     (x + y) / (w + h) * 220 + 25 * np.sin((x - y) / 50)], -1)
    low = rng.normal(0, 1, (h // 40 + 1, w // 40 + 1, 3))
    low = ((low - low.min()) / np.ptp(low) * 255).astype(np.uint8)
    low = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    arr = np.clip(0.6 * base + 0.4 * low + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)


def _make_video(path: Path) -> None:
    """20 s, 640x360, 30 fps H.264: a camera panning over a textured scene (~0.7 MB)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    w, h, tw, th, fps, seconds = 640, 360, 1280, 720, 30, 20
    y, x = np.mgrid[0:th, 0:tw].astype(np.float32)
    tex = np.stack([x / tw * 200 + 30 * np.sin(y / 40), y / th * 180 + 40 * np.cos(x / 50),
                    (x + y) / (tw + th) * 220], -1) + rng.normal(0, 10, (th, tw, 3))
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    with open(path, "wb") as fh:
        container = av.open(fh, "w", format="mp4")
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        n = fps * seconds
        for i in range(n):
            a = 2 * np.pi * i / n
            ox, oy = int(320 + 300 * np.cos(a)), int(180 + 170 * np.sin(a))
            frame = np.ascontiguousarray(tex[oy:oy + h, ox:ox + w])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()


def media_folder(kind: str, n: int) -> Path:
    """A cached folder of ``n`` hard links to one generated photo (``.jpg``) or video (``.mp4``)."""
    ext, make = {"photos": (".jpg", _make_photo), "videos": (".mp4", _make_video)}[kind]
    MEDIA_CACHE.mkdir(parents=True, exist_ok=True)
    src = MEDIA_CACHE / f"{kind}-v1{ext}"
    if not src.is_file():
        tmp = src.with_suffix(".part" + ext)
        make(tmp)
        tmp.rename(src)
    folder = MEDIA_CACHE / f"{kind}-v1-{n}"
    if not folder.is_dir():
        tmp_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=MEDIA_CACHE))
        for i in range(n):
            dst = tmp_dir / f"{i:06d}{ext}"
            try:
                os.link(src, dst)
            except OSError:
                import shutil

                shutil.copyfile(src, dst)
        tmp_dir.rename(folder)
    return folder


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_media_child(kind: str, n: int, model: str, window: int | None, decode_workers: int | None,
                       batch: int) -> dict:
    import threading

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run

    folder = media_folder(kind, n)
    root = Path(tempfile.mkdtemp(prefix=f"caprl-bench-mem-{kind}-{n}-"))
    batching = {k: v for k, v in (("window", window),) if v is not None}
    decode = {"workers": decode_workers} if decode_workers is not None else {}
    cfg = AnnotateConfig(
        input={"path": str(folder)},
        backend={"name": "transformers", "model": model, "batch_size": batch,
                 "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 4}},
        sharding={"shard_size": max(n, 1000)},
        batching=batching,
        decode=decode,
        output={"dedup": False},
        output_dir=str(root / "out"),
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((round(time.perf_counter() - t0, 2), round(_rss_mb())))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    rss_before = _rss_mb()
    sampler.start()
    report = run(cfg)
    stop.set()
    sampler.join()
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return {"kind": kind, "items": n, "ok": report.n_ok, "seconds": time.perf_counter() - t0,
            "window": cfg.batching.window, "decode_workers": cfg.decode.workers, "batch_size": batch,
            "rss_before_run_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_samples": samples}


def memory_media(sizes: dict[str, list[int]], window: int | None, decode_workers: int | None, batch: int,
                 trace: bool) -> list[dict]:
    model = tiny_captioner(MEDIA_CACHE)
    out: list[dict] = []
    for kind, ns in sizes.items():
        results = []
        for n in ns:
            media_folder(kind, n)  # generated outside the measured child
            cmd = [sys.executable, __file__, "_memory_media_child", kind, str(n), model, "--batch", str(batch)]
            if window is not None:
                cmd += ["--window", str(window)]
            if decode_workers is not None:
                cmd += ["--decode-workers", str(decode_workers)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{kind:>6} {r['items']:>5} in one shard: peak RSS {r['peak_rss_mb']:7.0f} MB  (before run "
                  f"{r['rss_before_run_mb']:.0f} MB; {r['ok']} ok, {r['seconds']:.0f} s; window {r['window']}, "
                  f"decode_workers {r['decode_workers']}, batch {r['batch_size']})", flush=True)
            if trace:
                print("   rss samples (s, MB):", r["rss_samples"][:: max(1, len(r["rss_samples"]) // 60)])
        base, top = results[0], results[-1]
        ratio = top["peak_rss_mb"] / base["peak_rss_mb"]
        print(f"{kind}: peak RSS ratio {top['items']} vs {base['items']}: {ratio:.3f} "
              f"({'ok' if ratio <= 1.3 else 'ABOVE'} the 1.3x target)", flush=True)
        out.append({"kind": kind, "ratio": ratio,
                    "runs": [{k: v for k, v in r.items() if k != "rss_samples"} for r in results]})
    return out


def embedded_inputs(n: int) -> dict[str, Path]:
    """A tar and a Parquet manifest of ``n`` photos, cached under ``MEDIA_CACHE``."""
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    photo = (media_folder("photos", 1) / "000000.jpg").read_bytes()
    paths = {"webdataset": MEDIA_CACHE / f"embedded-{n}.tar", "parquet": MEDIA_CACHE / f"embedded-{n}.parquet"}
    if not paths["webdataset"].is_file():
        tmp = paths["webdataset"].with_suffix(".part")
        with tarfile.open(tmp, "w") as tar:
            for i in range(n):
                data = photo + i.to_bytes(4, "little")  # bytes after the JPEG end marker: ignored by decoders
                info = tarfile.TarInfo(f"{i:07d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                meta = json.dumps({"i": i}).encode()
                info = tarfile.TarInfo(f"{i:07d}.json")
                info.size = len(meta)
                tar.addfile(info, io.BytesIO(meta))
        tmp.rename(paths["webdataset"])
    if not paths["parquet"].is_file():
        tmp = paths["parquet"].with_suffix(".part")
        with pq.ParquetWriter(tmp, pa.schema([("id", pa.string()), ("image_bytes", pa.binary())])) as w:
            for s in range(0, n, 100):  # row groups of 100 photos (~60 MB), as image datasets are written
                ids = list(range(s, min(s + 100, n)))
                w.write_table(pa.table({"id": [f"{i:07d}" for i in ids],
                                        "image_bytes": [photo + i.to_bytes(4, "little") for i in ids]}))
        tmp.rename(paths["parquet"])
    return paths


def embedded_child(fmt: str, path: str, shard_size: int) -> dict:
    import itertools
    import pickle

    from caprl_kit.io.config import InputConfig
    from caprl_kit.io.readers import iter_items

    cfg = InputConfig(path=path, format=fmt, **({"key_column": "id", "bytes_column": "image_bytes"}
                                                if fmt == "parquet" else {}))
    t0 = time.perf_counter()
    items = iter_items(cfg)
    shard = list(itertools.islice(items, shard_size))
    n = len(shard) + sum(1 for _ in items)
    seconds = time.perf_counter() - t0
    with open("/proc/self/io") as fh:
        rchar = next(int(line.split()[1]) for line in fh if line.startswith("rchar"))
    return {"format": fmt, "items": n, "list_seconds": seconds, "read_mb": rchar / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "shard_pickle_mb": len(pickle.dumps(shard)) / 2**20}


def main() -> None:
    if sys.argv[1:2] == ["vllm"]:  # (e): runs in the vLLM environment
        here = Path(__file__).resolve().parent
        python = os.environ.get("CAPRL_VLLM_PYTHON", str(here.parent / ".venv-vllm" / "bin" / "python"))
        raise SystemExit(subprocess.call([python, str(here / "annotate_vllm.py"), *sys.argv[2:]]))
    if sys.argv[1:2] == ["openai-gpu"]:  # (d): its own options, in benchmarks/stream.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from stream import main as stream_main

        return stream_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("openai-gpu", help="(d) openai back end vs the GPU-timing measuring server; see its --help")
    sub.add_parser("vllm", help="(e) vllm back end vs the same engine fed the whole queue (in .venv-vllm)")
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=192)
    sp.add_argument("--batch", type=int, default=16)
    sp.add_argument("--max-tokens", type=int, default=16)
    mp = sub.add_parser("memory")
    mp.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    mp.add_argument("--runner", default="local", choices=["local", "multiprocess", "ray"])
    mm = sub.add_parser("memory-media", help="peak RSS vs shard size with real-size photos and videos")
    mm.add_argument("--photos", type=int, nargs="*", default=[30, 300], help="photo counts (none: skip photos)")
    mm.add_argument("--videos", type=int, nargs="*", default=[20, 100], help="video counts (none: skip videos)")
    mm.add_argument("--window", type=int, default=None, help="batching.window (default: the config default)")
    mm.add_argument("--decode-workers", type=int, default=None, help="decode.workers (default: config's)")
    mm.add_argument("--batch", type=int, default=8, help="backend.batch_size")
    mm.add_argument("--trace", action="store_true", help="print the sampled RSS of each run")
    em = sub.add_parser("embedded", help="(f) listing embedded media: time, RSS, bytes read, what a shard carries")
    em.add_argument("--n", type=int, default=2000)
    em.add_argument("--shard-size", type=int, default=1000)
    ec = sub.add_parser("_embedded_child")
    ec.add_argument("fmt")
    ec.add_argument("path")
    ec.add_argument("shard_size", type=int)
    ch = sub.add_parser("_memory_child")
    ch.add_argument("n", type=int)
    ch.add_argument("--runner", default="local")
    mc = sub.add_parser("_memory_media_child")
    mc.add_argument("kind", choices=["photos", "videos"])
    mc.add_argument("n", type=int)
    mc.add_argument("model")
    mc.add_argument("--window", type=int, default=None)
    mc.add_argument("--decode-workers", type=int, default=None)
    mc.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.what == "speed":
        r = speed(args.n, args.batch, args.max_tokens)
        print(f"items: {r['items']}  batch: {r['batch_size']}  max_tokens: {r['max_tokens']}")
        print(f"ours (end to end)        {r['ours_items_per_s']:8.1f} items/s")
        print(f"ours (inside shards)     {r['ours_steady_items_per_s']:8.1f} items/s   (start-up excluded)")
        print(f"raw engine (pre-decoded) {r['raw_engine_items_per_s']:8.1f} items/s   ours/raw   = {r['ours_vs_raw']:.2f}x"
              f" end to end, {r['ours_steady_vs_raw']:.2f}x inside shards")
        print(f"naive sequential loop    {r['naive_items_per_s']:8.1f} items/s   ours/naive = {r['ours_vs_naive']:.2f}x")
        print(f"peak RSS {r['peak_rss_mb']:.0f} MB")
        print(json.dumps(r))
    elif args.what == "memory":
        results = []
        for n in args.sizes:
            out = subprocess.run([sys.executable, __file__, "_memory_child", str(n), "--runner", args.runner],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['items']:>8} inputs, runner {r['runner']}: peak RSS {r['peak_rss_mb']:7.0f} MB  ({r['seconds']:.0f} s, "
                  f"{r['items'] / r['seconds']:.0f} items/s)")
        base, top = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        print(f"peak RSS ratio {results[-1]['items']} vs {results[0]['items']} inputs: {top / base:.3f}")
    elif args.what == "memory-media":
        sizes = {k: v for k, v in (("photos", args.photos), ("videos", args.videos)) if v}
        t0 = time.perf_counter()
        out = memory_media(sizes, args.window, args.decode_workers, args.batch, args.trace)
        print(f"total {time.perf_counter() - t0:.0f} s")
        print(json.dumps(out))
    elif args.what == "embedded":
        for fmt, path in embedded_inputs(args.n).items():
            out = subprocess.run([sys.executable, __file__, "_embedded_child", fmt, str(path), str(args.shard_size)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{fmt:>10}: {r['items']} photos ({path.stat().st_size / 2**20:.0f} MB) listed in "
                  f"{r['list_seconds']:.2f} s, read {r['read_mb']:.0f} MB, peak RSS {r['peak_rss_mb']:.0f} MB; "
                  f"one shard of {args.shard_size} pickles to {r['shard_pickle_mb']:.2f} MB", flush=True)
            print(json.dumps(r))
    elif args.what == "_embedded_child":
        print(json.dumps(embedded_child(args.fmt, args.path, args.shard_size)))
    elif args.what == "_memory_media_child":
        print(json.dumps(memory_media_child(args.kind, args.n, args.model, args.window, args.decode_workers,
                                            args.batch)))
    else:
        print(json.dumps(memory_child(args.n, args.runner)))


if __name__ == "__main__":
    main()
