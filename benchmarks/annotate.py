"""caprl annotate throughput and memory, measured side by side in one run on the tiny captioner.

    .venv/bin/python benchmarks/annotate.py speed  [--n 192]                 # (a) items/s: ours vs raw engine vs naive loop
    .venv/bin/python benchmarks/annotate.py memory [--sizes 10000 100000]   # (b) peak RSS vs input size

(a) ours = the full pipeline (folder listing, background decoding, adaptive batches, Parquet shards + sidecars);
    raw = ``backend.generate`` alone on pre-decoded images in batches of the same size (no I/O at all);
    naive = a sequential loop: decode one image, generate for it, keep the row, write one Parquet at the end.
(b) each size runs in a fresh process: a JSONL manifest of N rows (over a few image files), 1 generated token per
    item, so the pipeline's own memory behaviour is what is measured.
"""

from __future__ import annotations

import argparse
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


def memory_child(n: int) -> dict:
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
        output_dir=str(root / "out"),
    )
    t0 = time.perf_counter()
    report = run(cfg)
    return {"items": n, "ok": report.n_ok, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=192)
    sp.add_argument("--batch", type=int, default=16)
    sp.add_argument("--max-tokens", type=int, default=16)
    mp = sub.add_parser("memory")
    mp.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ch = sub.add_parser("_memory_child")
    ch.add_argument("n", type=int)
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
            out = subprocess.run([sys.executable, __file__, "_memory_child", str(n)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['items']:>8} inputs: peak RSS {r['peak_rss_mb']:7.0f} MB  ({r['seconds']:.0f} s, "
                  f"{r['items'] / r['seconds']:.0f} items/s)")
        base, top = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        print(f"peak RSS ratio {results[-1]['items']} vs {results[0]['items']} inputs: {top / base:.3f}")
    else:
        print(json.dumps(memory_child(args.n)))


if __name__ == "__main__":
    main()
