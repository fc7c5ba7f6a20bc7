"""Process-pool runner: ``num_workers`` spawned processes, each building its own worker (one engine each, e.g.
one per GPU via CUDA_VISIBLE_DEVICES), shards handed out as they free up. Shards travel as (spec, items) —
paths, not decoded media."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Iterable

from caprl_kit.commands import NullProgress, Progress
from caprl_kit.io.shards import ShardSpec
from caprl_kit.runners.local import WorkerFactory, run_one
from caprl_kit.schemas.run import ShardStats

_WORKER: Any = None


def _init(factory: WorkerFactory, gpu_env: list[str] | None, counter: Any) -> None:
    global _WORKER
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    if gpu_env:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_env[rank % len(gpu_env)]
    _WORKER = factory(NullProgress())


def _run(spec: ShardSpec, items: list[Any], max_retries: int) -> ShardStats:
    return run_one(_WORKER, spec, items, max_retries)


def run_multiprocess(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    factory: WorkerFactory,
    *,
    done: set[int] = frozenset(),  # type: ignore[assignment]
    max_retries: int = 1,
    num_workers: int = 2,
    address: str | None = None,
    progress: Progress | None = None,
    stage: str = "annotate",
) -> tuple[list[ShardStats], int]:
    progress = progress or NullProgress()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_env = visible.split(",") if visible else None
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    written: list[ShardStats] = []
    skipped = 0
    with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init,
                             initargs=(factory, gpu_env, counter)) as pool:
        pending: set[Future] = set()
        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            pending.add(pool.submit(_run, spec, items, max_retries))
            if len(pending) >= 2 * num_workers:  # bounded: the input is streamed, not listed up front
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                written += _collect(finished, progress, stage)
        finished, _ = wait(pending)
        written += _collect(finished, progress, stage)
    return written, skipped


def _collect(futures: set[Future], progress: Progress, stage: str) -> list[ShardStats]:
    out = []
    for f in futures:
        stats = f.result()
        progress.advance(stage, items=stats.n_items, failed=stats.n_failed,
                         tokens=int(stats.metrics.get("completion_tokens", 0)))
        out.append(stats)
    return out
