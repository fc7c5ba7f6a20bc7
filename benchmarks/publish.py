"""caprl annotate publish on a ~2 GB annotate run: row-group byte sizes, rows per group, wall time, peak RSS.

    .venv/bin/python benchmarks/publish.py [--gb 2.0] [--row-group-size 200MB] [--file-size 1GB] [--keep]

The run is made without a model: annotate-like rows written straight into shards by the project's own shard writer
(``RunDir.open`` + ``commit_shard``, as the annotate worker commits them, with their stats sidecars), ``shard_size``
1000, one caption per item of a realistic length (lognormal words, median ~420 words / ~2.6 kB, the size of CapRL-3B
captions), the run's media embedded (``output.embed_media``): per item a JPEG-sized blob of random bytes (lognormal,
median ~380 kB, 60 kB - 1.5 MB; random so nothing compresses, as JPEG does not), about 1% failed rows. Then
``publish`` runs in a fresh process (its ``VmHWM`` is the peak RSS; the import baseline is reported beside it),
and the footers of what it wrote give each row group's uncompressed bytes (what the Hub viewer checks: at most
300 MB) and rows. Everything is under ``$TMPDIR/caprl-bench-publish-*`` and removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a of and in with on at to is are its from left right top bottom background foreground red blue green white "
    "black yellow wooden metal glass small large bright dark person man woman child dog cat car tree building window "
    "table chair sign text reads label chart bar axis value shows labeled shadow light sky road grass water wall door "
    "holding standing sitting wearing shirt jacket hat near behind next beside above below center corner edge"
).split()


def make_run(out: Path, total_bytes: float, shard_size: int, seed: int) -> dict:
    """An annotate run of ~``total_bytes`` of rows (media + captions) in ``out``, committed shard by shard."""
    import numpy as np

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.io.rundir import RunDir, prepare_output
    from caprl_kit.io.stats import StatsBuilder
    from caprl_kit.monitors import FLAG_METRIC
    from caprl_kit.schemas.annotation import AnnotationRow

    rng = np.random.default_rng(seed)
    media_median, caption_median = 380_000, 2_600
    n = int(total_bytes / (media_median * 1.08 + caption_median))  # the lognormal's mean is ~1.08x its median
    cfg = AnnotateConfig.model_validate(
        {
            "input": {"path": "synthetic.jsonl"},
            "backend": {"name": "lexical"},
            "sharding": {"shard_size": shard_size},
            "output": {"embed_media": True},
            "output_dir": str(out),
        }
    )
    prepare_output(str(out), "annotate")
    run = RunDir(str(out), AnnotationRow)
    run.open(
        command="annotate",
        config=cfg,
        config_hash=cfg.fingerprint(),
        input_fingerprint=f"synthetic-{seed}",
        n_items=n,
        shard_size=shard_size,
    )
    sampling = {
        "n": 1,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": None,
        "max_tokens": 2048,
        "seed": seed,
        "repetition_penalty": 1.0,
    }
    words = np.array(WORDS)
    media_bytes = 0
    for shard, start in enumerate(range(0, n, shard_size)):
        stats = StatsBuilder(shard, AnnotationRow.schema_id())
        rows = []
        for i in range(start, min(n, start + shard_size)):
            key = f"img_{i:07d}.jpg"
            if rng.random() < 0.01:
                rows.append(
                    {
                        "key": key,
                        "source": f"/data/photos/{key}",
                        "model": "internlm/CapRL-3B",
                        "prompt_id": "caprl_image",
                        "prompt": "Please describe this image in detail.",
                        "sampling": sampling,
                        "status": "failed_to_decode",
                        "error_message": f"/data/photos/{key}: cannot identify image file",
                    }
                )
                stats.add("failed_to_decode", rows[-1]["error_message"])
                continue
            size = int(np.clip(rng.lognormal(np.log(media_median), 0.4), 60_000, 1_500_000))
            blob = b"\xff\xd8\xff\xe0" + rng.bytes(size - 4)
            media_bytes += size
            n_words = int(np.clip(rng.lognormal(np.log(420), 0.35), 80, 1800))
            caption = " ".join(words[rng.integers(0, len(words), n_words)]).capitalize() + "."
            tokens = int(n_words * 1.3)
            rows.append(
                {
                    "key": key,
                    "source": f"/data/photos/{key}",
                    "media_bytes": blob,
                    "caption": caption,
                    "captions": [caption],
                    "model": "internlm/CapRL-3B",
                    "prompt_id": "caprl_image",
                    "prompt": "Please describe this image in detail.",
                    "sampling": sampling,
                    "prompt_tokens": 1300,
                    "completion_tokens": [tokens],
                    "finish_reasons": ["stop"],
                    "caption_flags": [[]],
                    "width": 1288,
                    "height": 966,
                    "latency_s": 4.2,
                    "content_hash": f"{i:064x}",
                    "status": "ok",
                }
            )
            stats.add("ok")
            stats.add_metric("completion_tokens", tokens)
            stats.add_metric("prompt_tokens", 1300)
            stats.add_metric(FLAG_METRIC.format("captions"), 1)
        run.commit_shard(shard, rows, stats.build())
        print(f"  shard {shard}: {len(rows)} rows", file=sys.stderr, flush=True)
    return {"items": n, "media_mb": media_bytes / 1e6}


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it does not carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def publish_child(run_dir: str, out_dir: str, row_group: str, file_size: str) -> dict:
    import datasets  # noqa: F401  # publish imports it for the card: part of the baseline

    from caprl_kit.annotate.publish import PublishOptions, parse_size, publish

    base_rss = peak_rss_mb()
    t0 = time.perf_counter()
    result = publish(
        run_dir, out_dir, PublishOptions(row_group_bytes=parse_size(row_group), file_bytes=parse_size(file_size))
    )
    secs = time.perf_counter() - t0
    groups = result.row_groups
    return {
        "rows": result.rows,
        "files": len(result.files),
        "row_groups": len(groups),
        "group_mb": [round(g.bytes / 1e6, 1) for g in groups],
        "group_rows": [g.rows for g in groups],
        "data_mb": sum(g.bytes for g in groups) / 1e6,
        "seconds": secs,
        "peak_rss_mb": peak_rss_mb(),
        "import_rss_mb": base_rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="size of the run's rows (media + captions), GB")
    ap.add_argument("--row-group-size", default="200MB")
    ap.add_argument("--file-size", default="1GB")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the run and the published folder")
    ap.add_argument("--child", nargs=4, metavar=("RUN", "OUT", "GROUP", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(publish_child(*args.child)))
        return
    root = Path(tempfile.mkdtemp(prefix="caprl-bench-publish-"))
    try:
        t0 = time.perf_counter()
        made = make_run(root / "run", args.gb * 1e9, args.shard_size, args.seed)
        run_mb = sum(p.stat().st_size for p in (root / "run").glob("*.parquet")) / 1e6
        print(
            f"run: {made['items']} items, {made['media_mb']:.0f} MB of media, {run_mb:.0f} MB of shards on disk "
            f"(made in {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(root / "run"),
                str(root / "hub"),
                args.row_group_size,
                args.file_size,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        import pyarrow.parquet as pq

        files = sorted((root / "hub" / "data").glob("*.parquet"))
        assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == r["rows"]
        mb, rows = r["group_mb"], r["group_rows"]
        print(
            f"published: {r['rows']} rows, {r['data_mb']:.0f} MB uncompressed in {r['files']} files, "
            f"{r['row_groups']} row groups (target {args.row_group_size}, files {args.file_size})"
        )
        print(
            f"row group MB: min {min(mb)} max {max(mb)} (all but the last: min {min(mb[:-1] or mb)}); "
            f"rows per group: min {min(rows)} max {max(rows)}"
        )
        print(
            f"wall {r['seconds']:.1f} s ({r['data_mb'] / r['seconds']:.0f} MB/s), peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(imports alone {r['import_rss_mb']:.0f} MB)"
        )
        print(json.dumps(r))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: {root}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    main()
