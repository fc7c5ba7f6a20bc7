"""caprl annotate: input listing -> shards -> runner -> Annotator worker -> Parquet shards + stats -> report.

``run(cfg)`` is exactly what ``caprl annotate --config ...`` does. Rerunning resumes (finished shards are
skipped); a changed input or config is refused unless ``overwrite``.
"""

from __future__ import annotations

import functools
import json
import time
from datetime import datetime
from typing import Any

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.select import candidates_config, quality_of, select_stage
from caprl_kit.backends.base import RETRYABLE_KINDS
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.empty import describe as describe_empty
from caprl_kit.io.fs import atomic_write_text, join
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.readers import detect_format, iter_items
from caprl_kit.io.rundir import RunDir, prepare_output
from caprl_kit.io.shards import iter_shards
from caprl_kit.log import get_logger
from caprl_kit.monitors import FLAG_METRIC, FLAGS, rates_from_metrics
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.runners.driver import Stage, begin, command, fingerprint_items, run_stage
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.layout import ANNOTATE_CANDIDATES_DIR
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)
STAGE = "annotate"


def fingerprint_input(cfg: AnnotateConfig) -> tuple[str, int]:
    """One streaming pass over the listing: (sha256 of the ordered keys/sources/sizes, item count)."""
    listing = fingerprint_items(iter_items(cfg.input))
    return listing.fingerprint, listing.n_items


def plan(cfg: AnnotateConfig) -> list[str]:
    try:
        fmt = detect_format(cfg.input)
        _, n = fingerprint_input(cfg)
    except CaprlError as exc:
        fmt, n = "?", 0
        listing = f"WARNING: cannot list the input yet: {exc}"
    else:
        if n == 0:  # the run would refuse it: so does the dry run
            raise CaprlError(describe_empty(cfg.input))
        listing = f"read {n} item(s) from {cfg.input.path} (format: {fmt})"
    shards = -(-n // cfg.sharding.shard_size) if n else 0
    lines = [
        listing,
        f"caption them with {cfg.backend.name}:{cfg.backend.model} (n={cfg.backend.sampling.n}, "
        f"temperature={cfg.backend.sampling.temperature}, max_tokens={cfg.backend.sampling.max_tokens})",
        f"write {shards} shard(s) of up to {cfg.sharding.shard_size} rows to {cfg.output_dir or '<--output>'} "
        f"with runner {cfg.runner.name} x{cfg.runner.num_workers}",
    ]
    if cfg.select is not None:
        terms = " + ".join(f"{c.weight} x {c.name}" for c in cfg.select.reward.components if c.weight)
        lines.insert(
            2,
            f"select: score the {cfg.backend.sampling.n} captions of each item by {terms} (candidates in "
            f"{ANNOTATE_CANDIDATES_DIR}/) and keep the best as caption",
        )
    if cfg.output_dir:
        run = RunDir(cfg.output_dir, AnnotationRow)
        done = run.done_shards()
        if done:
            lines.append(f"resume: {len(done)} shard(s) already done would be skipped")
    return lines


def make_annotator(
    cfg: AnnotateConfig, progress: Progress, seen: dict[str, str] | None = None, retry: frozenset[int] = frozenset()
):
    from caprl_kit.annotate.worker import Annotator

    return Annotator(cfg, progress=progress, seen_hashes=seen, retry=retry)


def _seen_hashes(run: RunDir) -> dict[str, str]:
    seen: dict[str, str] = {}
    for url in run.shard_urls():
        t = read_shard(url, AnnotationRow, columns=["key", "content_hash", "status"])
        for key, h, status in zip(*(t.column(c).to_pylist() for c in ("key", "content_hash", "status"))):
            if h and status == "ok":
                seen.setdefault(h, key)
    return seen


def caption_stage(cfg: AnnotateConfig, *, retry_failed: bool = False) -> Stage:
    """The caption stage, declared: one ``annotation`` row per input item in ``cfg.output_dir``; its output
    depends on the whole annotate config's resume identity; its worker (annotate/worker.py) needs ``cfg.backend``.
    ``caprl annotate`` runs it alone; eval's stage 1 (``captions/<task>``) and pairs' samples run it inside their
    own command. ``retry_failed``: finished shards holding retryable failures are run again (``Annotator.retry``)."""
    run_dir = RunDir(cfg.output_dir, AnnotationRow)  # type: ignore[arg-type]  # output_dir is set: begin() refuses a run without one
    # dedup across resumes needs the hashes of finished shards; across processes it is refused at config time
    seen = _seen_hashes(run_dir) if cfg.output.dedup and run_dir.exists() else {}  # --overwrite removed it
    retry = run_dir.shards_with(RETRYABLE_KINDS) if retry_failed and run_dir.exists() else frozenset()
    if retry_failed:
        log.info("--retry-failed: %d finished shard(s) hold retryable failures", len(retry))
    return Stage(
        STAGE,
        "annotate",
        run_dir,
        cfg.fingerprint(),
        functools.partial(make_annotator, cfg, seen=seen, retry=retry),
        lambda: iter_shards(iter_items(cfg.input), cfg.sharding.shard_size),
        engines=(cfg.backend,),
        redo=retry,
    )


def caption(cfg: AnnotateConfig, progress: Progress) -> RunReport:
    """The caption stage in a folder of the calling command (eval's ``captions/<task>``, pairs' ``samples/``),
    which claimed its OUTPUT and checked its engines: the input listed, the stage run, its rows summarised."""
    prepare_output(str(cfg.output_dir), STAGE)
    listing = fingerprint_items(iter_items(cfg.input))
    written, skipped = run_stage(cfg, caption_stage(cfg), listing, progress=progress)
    report = summarize(RunDir(cfg.output_dir, AnnotationRow), STAGE)  # type: ignore[arg-type]  # output_dir is set: the caller's folder
    report.shards_done, report.shards_skipped = len(written), skipped
    return report


@command
def run(
    cfg: AnnotateConfig, *, overwrite: bool = False, retry_failed: bool = False, progress: Progress | None = None
) -> RunReport:
    """``caprl annotate``: the caption stage over the input, then the summary (and captions.jsonl)."""
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    quality = quality_of(cfg.select) if cfg.select is not None else {}
    listing = begin(
        cfg,
        "annotate",
        lambda: fingerprint_items(iter_items(cfg.input)),
        {"backend": cfg.backend, **quality},
        overwrite=overwrite,
        record_config=False,
        empty=lambda: describe_empty(cfg.input),
    )
    if cfg.select is None:
        stage = caption_stage(cfg, retry_failed=retry_failed)
        written, skipped = run_stage(cfg, stage, listing, progress=progress)
    else:  # best-of-n: the candidates in OUTPUT/candidates, then the chosen rows in OUTPUT (annotate/select.py)
        candidates = candidates_config(cfg)
        prepare_output(str(candidates.output_dir), STAGE)
        first = caption_stage(candidates, retry_failed=retry_failed)
        run_stage(candidates, first, listing, progress=progress)
        stage = select_stage(cfg, tuple(quality.values()), redo=first.redo)
        written, skipped = run_stage(cfg, stage, listing, progress=progress)
    report = summarize(stage.run_dir, "annotate")
    report.shards_done, report.shards_skipped = len(written), skipped
    scored = report.metrics.pop("select_scored", 0.0)
    chosen, candidates_mean = (
        report.metrics.pop("select_chosen_sum", 0.0),
        report.metrics.pop("select_candidates_sum", 0.0),
    )
    if scored:  # best-of-n: the chosen caption's quality beside the mean of every candidate's, over the items
        report.metrics.update(select_chosen_mean=chosen / scored, select_candidates_mean=candidates_mean / scored)
    report.duration_s = time.perf_counter() - t0
    report.outputs["shards"] = str(cfg.output_dir)
    if cfg.output.export_jsonl:
        report.outputs["captions.jsonl"] = export_jsonl(stage.run_dir)
    log.info("annotate finished: %d items, %d ok, %d failed", report.n_items, report.n_ok, report.n_failed)
    return report


def summarize(run_dir: RunDir, command: str) -> RunReport:
    report = RunReport(command=command, output_dir=run_dir.url)
    for s in run_dir.read_stats():
        report.n_items += s.n_items
        report.n_ok += s.n_ok
        report.n_failed += s.n_failed
        for k, v in s.status_counts.items():
            report.status_counts[k] = report.status_counts.get(k, 0) + v
        for name, value in s.metrics.items():
            if name != "items_per_s":
                report.metrics[name] = report.metrics.get(name, 0.0) + value
    prefix = FLAG_METRIC.format("")
    for flag, rate in rates_from_metrics(report.metrics).items():  # counts per shard -> one rate per flag
        report.metrics[f"caption_{flag}_rate"] = rate
    for k in [k for k in report.metrics if k.startswith(prefix) and k != FLAG_METRIC.format("captions")]:
        del report.metrics[k]
    return report


def export_jsonl(run_dir: RunDir) -> str:
    """captions.jsonl in the CapRL-2M / CapRL-Video-178K style: {"image"|"video": path, "caption": text}, one line
    per captioned item. A run that sampled n > 1 captions per item adds ``"captions": [all n]`` to every line
    (``caption`` stays the first, so single-caption readers see the file as before).
    (The CapRL-2M field names are not documented upstream; these match CapRL-Video-178K's ``video``/``caption``.)"""
    lines = []
    columns = ["key", "source", "media_type", "caption", "captions", "sampling", "status"]
    for url in run_dir.shard_urls():
        for row in read_shard(url, AnnotationRow, columns=columns).to_pylist():
            if row["status"] == "ok":
                line = {row["media_type"]: row["source"] or row["key"], "caption": row["caption"]}
                if row["sampling"]["n"] > 1:
                    line["captions"] = row["captions"]
                lines.append(json.dumps(line, ensure_ascii=False))
    path = join(run_dir.path, "captions.jsonl")
    atomic_write_text(run_dir.fs, path, "\n".join(lines) + ("\n" if lines else ""))
    return join(run_dir.url, "captions.jsonl")


def status(output_dir: str) -> dict[str, Any]:
    """What a running or finished annotate job has done so far (reads only the manifest and sidecars)."""
    run_dir = RunDir(output_dir, AnnotationRow)
    manifest = run_dir.manifest()
    if manifest is None:
        raise ConfigError([ConfigIssue("DIR", f"no run_manifest.json in {output_dir}: not a caprl run directory")])
    stats = run_dir.read_stats()
    report = summarize(run_dir, manifest.command)
    # shards overlap on the streaming engine: throughput is items over the wall span, not over summed durations
    starts = [datetime.fromisoformat(s.started_at) for s in stats]
    ends = [datetime.fromisoformat(s.finished_at) for s in stats]
    secs = (max(ends) - min(starts)).total_seconds() if stats else 0.0
    return {
        "output_dir": output_dir,
        "command": manifest.command,
        "created_at": manifest.created_at,
        "shards_done": len(stats),
        "shards_total": manifest.n_shards,
        "items_done": report.n_items,
        "items_total": manifest.n_items,
        "ok": report.n_ok,
        "failed": report.n_failed,
        "status_counts": report.status_counts,
        "completion_tokens": int(report.metrics.get("completion_tokens", 0)),
        "caption_flags": {f: report.metrics[k] for f in FLAGS if (k := f"caption_{f}_rate") in report.metrics},
        "items_per_s": report.n_items / secs if secs else 0.0,
        "last_finished_at": max((s.finished_at for s in stats), default=None),
        "nodes": shards_per_node(stats),
    }


def shards_per_node(stats: list[ShardStats]) -> list[dict[str, Any]]:
    """Where the shards ran: per node (Ray node id, else host), its shards, items, worker processes and GPU ids."""
    nodes: dict[str, dict[str, Any]] = {}
    for s in stats:
        w = s.worker
        node = (w.node_id or w.host) if w else "unknown (not recorded)"
        n = nodes.setdefault(
            node,
            {"node": node, "host": w.host if w else None, "shards": 0, "items": 0, "workers": set(), "gpu_ids": set()},
        )
        n["shards"] += 1
        n["items"] += s.n_items
        if w:
            n["workers"].add(w.pid)
            n["gpu_ids"].update(w.gpu_ids)
    return [{**n, "workers": len(n["workers"]), "gpu_ids": sorted(n["gpu_ids"])} for n in nodes.values()]
