"""Process-pool runner: ``num_workers`` spawned processes on this machine, each building its own worker (its
engines), shards handed out as they free up. Shards travel as (spec, items): paths, not decoded media.

GPUs: the devices this process sees (``CUDA_VISIBLE_DEVICES``) are dealt out in consecutive groups of the GPUs a
worker needs (``placement.worker_resources``: a tensor-parallel vllm engine its TP size), so workers never share a
GPU unless ``runner.resources.num_gpus`` is a fraction; more workers than groups is refused."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Iterable

from caprl_kit.commands import NullProgress, Progress
from caprl_kit.io.shards import ShardSpec
from caprl_kit.runners.local import WorkerFactory, run_one
from caprl_kit.runners.placement import WorkerResources
from caprl_kit.schemas.run import ShardStats

_WORKER: Any = None


def _init(factory: WorkerFactory, gpu_groups: list[str] | None, counter: Any) -> None:
    global _WORKER
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    if gpu_groups:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_groups[rank % len(gpu_groups)]
    _WORKER = factory(NullProgress())


def gpu_groups(visible: list[str], per_worker: float, num_workers: int) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` for each worker rank: consecutive groups of ``per_worker`` GPUs (a fraction: that
    many workers share each GPU). None when the workers need no GPU or none is visible."""
    if not per_worker or not visible:
        return None
    if per_worker < 1:
        share = max(1, int(1 / per_worker))
        return [visible[(rank // share) % len(visible)] for rank in range(num_workers)]
    k = math.ceil(per_worker)
    groups = [",".join(visible[i : i + k]) for i in range(0, len(visible) - k + 1, k)]
    if len(groups) < num_workers:
        from caprl_kit.errors import ConfigError, ConfigIssue

        raise ConfigError([ConfigIssue("runner.num_workers", f"{num_workers} workers x {k} GPU(s) each need "
                                       f"{num_workers * k} GPUs; CUDA_VISIBLE_DEVICES shows {len(visible)}",
                                       f"use runner.num_workers <= {max(1, len(groups))}, or a smaller "
                                       "tensor_parallel_size / runner.resources.num_gpus")])
    return groups


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
    resources: WorkerResources | None = None,
) -> tuple[list[ShardStats], int]:
    progress = progress or NullProgress()
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    groups = gpu_groups(visible, resources.num_gpus if resources else 1, num_workers)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    written: list[ShardStats] = []
    skipped = 0
    with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init,
                             initargs=(factory, groups, counter)) as pool:
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
