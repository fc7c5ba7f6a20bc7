"""Process runner: ``num_workers`` spawned processes on this machine, each building its own worker (its engines)
once, shards handed out as they free up, three in flight per process (one running, two queued on it). Shards
travel as (spec, items): paths and locators, not media. A streaming worker keeps one engine stream open across its
shards (``LiveStream``), so a queued shard enters the engine while the running one's stragglers finish.

GPUs: the devices this process sees (``CUDA_VISIBLE_DEVICES``) are dealt out in consecutive groups of the GPUs a
worker needs (``placement.worker_resources``: a tensor-parallel vllm engine its TP size), so workers never share a
GPU unless ``runner.resources.num_gpus`` is a fraction; more workers than groups is refused.

A worker process that dies (killed, out of memory) stops the run with one message naming it and its shards;
finished shards are kept and a rerun resumes (the ``ray`` runner redoes such shards elsewhere instead)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterable, Set as AbstractSet
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.io.shards import ShardSpec
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.runners.local import WorkerFactory, advance_shard, run_one
from caprl_kit.runners.placement import WorkerResources
from caprl_kit.runners.stream import LiveStream
from caprl_kit.schemas.run import ShardStats

SHARDS_PER_WORKER = 3  #: one running, two queued: the next one enters the engine before the last one ends


def _serve(rank: int, factory: WorkerFactory, gpus: str | None, max_retries: int, inbox: Any, outbox: Any) -> None:
    """A worker process: its engines are built once and closed when it leaves (``backends.pool``)."""
    from caprl_kit.backends.pool import engine_pool

    with engine_pool():
        _work(rank, factory, gpus, max_retries, inbox, outbox)


def _work(rank: int, factory: WorkerFactory, gpus: str | None, max_retries: int, inbox: Any, outbox: Any) -> None:
    """Shards from ``inbox`` until None; ("ok", shard id, stats) or ("error", shard id, exc) to ``outbox``. A
    streaming worker runs each shard on a thread of its own that waits on the shared live stream."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers itself
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    try:
        worker = factory(NullProgress())
    except BaseException as exc:  # noqa: BLE001 - the driver says why the worker could not start
        outbox.put(("error", None, _portable(exc)))
        return
    live: LiveStream[ShardStats] | None = LiveStream(worker, max_retries) if hasattr(worker, "open_stream") else None

    def one(spec: ShardSpec, items: list[Any]) -> None:
        try:
            stats = live.run(spec, items) if live is not None else run_one(worker, spec, items, max_retries)
            outbox.put(("ok", spec.shard_id, stats))
        except BaseException as exc:  # noqa: BLE001 - the driver must hear of whatever stopped the shard
            outbox.put(("error", spec.shard_id, _portable(exc)))

    parent = os.getppid()
    while True:
        try:
            msg = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the driver was killed: nobody will collect, free the engine's devices
                return
            continue
        if msg is None:
            return
        if live is not None:
            threading.Thread(target=one, args=msg, daemon=True).start()
        else:
            one(*msg)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip (the queue to the driver), else a ``CaprlError`` with its text: a
    message the queue cannot carry would be dropped and leave the driver waiting."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send the text instead
        return CaprlError(f"{type(exc).__name__}: {exc}")


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

        raise ConfigError(
            [
                ConfigIssue(
                    "runner.num_workers",
                    f"{num_workers} workers x {k} GPU(s) each need "
                    f"{num_workers * k} GPUs; CUDA_VISIBLE_DEVICES shows {len(visible)}",
                    f"use runner.num_workers <= {max(1, len(groups))}, or a smaller "
                    "tensor_parallel_size / runner.resources.num_gpus",
                )
            ]
        )
    return groups


def run_multiprocess(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    factory: WorkerFactory,
    *,
    done: AbstractSet[int] = frozenset(),
    max_retries: int = 1,
    num_workers: int = 2,
    address: str | None = None,
    progress: Progress | None = None,
    stage: str = "annotate",
    resources: WorkerResources | None = None,
    committed: Callable[[int], ShardStats | None] | None = None,  # a dead process ends the run here: nothing redone
) -> tuple[list[ShardStats], int]:
    progress = progress or NullProgress()
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    groups = gpu_groups(visible, resources.num_gpus if resources else 1, num_workers)
    pool: _Processes | None = None
    skipped = 0
    try:
        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            if pool is None:  # the first shard to do starts the processes (a finished run starts none)
                pool = _Processes(factory, groups, num_workers, max_retries, progress, stage)
            pool.submit(spec, items)
        if pool is None:
            return [], skipped
        pool.finish()
        return pool.written, skipped
    finally:
        if pool is not None:
            pool.close()


class _Processes:
    def __init__(
        self, factory: WorkerFactory, groups: list[str] | None, n: int, max_retries: int, progress: Progress, stage: str
    ):
        ctx = mp.get_context("spawn")
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(n)]
        # not daemons: a daemon process may not start children, and vLLM's engine and decode processes do; close()
        # stops them, and a worker whose driver is gone leaves on its own
        self.procs = [
            ctx.Process(
                target=_serve,
                name=f"caprl-worker-{rank}",
                daemon=False,
                args=(
                    rank,
                    factory,
                    groups[rank % len(groups)] if groups else None,
                    max_retries,
                    self.inboxes[rank],
                    self.outbox,
                ),
            )
            for rank in range(n)
        ]
        for p in self.procs:
            p.start()
        self.held: list[dict[int, str]] = [{} for _ in range(n)]  # per process: shard id -> name, in flight
        self.written: list[ShardStats] = []
        self.progress, self.stage = progress, stage

    def submit(self, spec: ShardSpec, items: list[Any]) -> None:
        while True:
            rank = min(range(len(self.procs)), key=lambda r: len(self.held[r]))
            if len(self.held[rank]) < SHARDS_PER_WORKER:
                break
            self._collect()
        self.held[rank][spec.shard_id] = spec.name
        self.inboxes[rank].put((spec, items))

    def finish(self) -> None:
        while any(self.held):
            self._collect()

    def _collect(self) -> None:
        """Wait for one result; a worker's error is raised as itself, a dead process as one message."""
        while True:
            try:
                kind, sid, value = self.outbox.get(timeout=0.5)
                break
            except queue.Empty:
                for rank, p in enumerate(self.procs):
                    if not p.is_alive() and self.outbox.empty():  # its last words may still be in the queue
                        names = ", ".join(self.held[rank].values()) or "none"
                        raise CaprlError(
                            f"worker process {rank} (pid {p.pid}) died with exit code {p.exitcode} "
                            f"while holding shard(s) {names} (killed, or out of memory?); finished "
                            "shards are kept, rerun to resume"
                        ) from None
        if kind == "error":
            raise value
        for held in self.held:
            held.pop(sid, None)
        stats: ShardStats = value
        advance_shard(self.progress, self.stage, stats)
        self.written.append(stats)

    def close(self) -> None:
        for inbox, p in zip(self.inboxes, self.procs):
            if p.is_alive():
                inbox.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():  # a shard still running (an error elsewhere, Ctrl-C): stop it, it was not committed
                p.terminate()
                p.join(timeout=5)
