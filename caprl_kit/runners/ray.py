"""Ray runner (``runner: ray``): the same worker code on a local Ray instance or a cluster.

``num_workers`` Ray actors each build their worker (and its engine) once and process whole shards, writing the
Parquet shard and its stats sidecar themselves; only the small stats come back. The driver streams the input:
each shard is handed to the next free actor slot as soon as it is cut, three in flight per actor (one running,
two queued on it), so work starts while the listing is still running and the driver holds a few shards at a time,
whatever the input size (items travel as paths, metadata and locators of embedded bytes; media are read and
decoded on the workers). Inside an actor its shards flow through one open engine stream (``LiveStream``): the
queued shard's requests enter the engine while the running shard's last captions finish.

Each actor asks for what its engines need (``placement.worker_resources``: a vllm engine its tensor-parallel size
in GPUs, a transformers engine one; ``runner.resources`` overrides), so Ray sets its ``CUDA_VISIBLE_DEVICES`` to
GPUs of its own (an actor that asks for none sees none). A worker needing more than one GPU (tensor parallel) gets a
placement group of its own with one STRICT_PACK bundle, so its GPUs sit on one node, and child tasks (vLLM's Ray
workers) are scheduled inside it. The run waits ``runner.resources.start_timeout_s`` for every actor to be placed,
then stops naming what the cluster lacks (never a silent wait). Every shard's stats sidecar records the host, pid,
Ray node id and GPU ids that ran it (``caprl annotate status`` shows shards per node).

Faults: a shard whose actor died (killed, out of memory, its node left the cluster) is redone on the next free
actor, so the run goes on with the rest; the dead actor rejoins when Ray has restarted it (``max_restarts=-1``),
wherever it fits. A half-written shard was never committed, and a shard the actor committed but did not get to
report (its writer thread commits) is found by its stats sidecar and kept, not redone: every item ends up exactly
once. The user sees a
warning naming the shard and the cause; when no worker is alive or coming back for ``start_timeout_s``, the run
stops with what the cluster has free (finished shards kept, a rerun resumes).

On a cluster, pass ``runner.address`` (e.g. ``ray://head:10001`` or ``auto``) and install caprl-kit on the
workers; outputs must then be on shared storage (an fsspec URL such as ``s3://``). See docs/cluster.md.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Set as AbstractSet
from typing import Any

from caprl_kit._optional import require
from caprl_kit.errors import CaprlError
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.runners.local import WorkerFactory, advance_shard, run_one
from caprl_kit.runners.placement import WorkerResources
from caprl_kit.runners.stream import LiveStream
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)


class _ShardActor:
    """A threaded actor (``max_concurrency`` = shards in flight + 1): a streaming worker keeps one engine stream
    open across its calls (``LiveStream``), so the shard queued behind the running one enters the engine while the
    running one's stragglers finish; other workers run their shards one call at a time."""

    def __init__(self, factory: WorkerFactory, max_retries: int):
        self.worker = factory(NullProgress())
        self.max_retries = max_retries
        self.live: LiveStream[ShardStats] | None = (
            LiveStream(self.worker, max_retries) if hasattr(self.worker, "open_stream") else None
        )
        self.lock = threading.Lock()

    def ready(self) -> bool:
        return True

    def run(self, spec: ShardSpec, items: list[Any]) -> str:
        if self.live is not None:
            return self.live.run(spec, items).model_dump_json()
        with self.lock:
            return run_one(self.worker, spec, items, self.max_retries).model_dump_json()


def run_ray(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    factory: WorkerFactory,
    *,
    done: AbstractSet[int] = frozenset(),
    max_retries: int = 1,
    num_workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    stage: str = "annotate",
    resources: WorkerResources | None = None,
    committed: Callable[[int], ShardStats | None] | None = None,
) -> tuple[list[ShardStats], int]:
    ray = require("ray", extra="ray")
    progress = progress or NullProgress()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    groups: list[Any] = []
    actors: list[Any] = []
    pool: _Pool | None = None
    skipped = 0
    try:
        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            if pool is None:  # the first shard to do: start the pool (a finished run starts nothing)
                actors = _start_actors(ray, factory, max_retries, num_workers, resources, groups)
                pool = _Pool(
                    ray,
                    actors,
                    progress,
                    stage,
                    (resources or WorkerResources(1, 0, False)).start_timeout_s,
                    committed or (lambda _: None),
                )
            pool.submit(spec, items)
        if pool is None:
            return [], skipped
        pool.finish()
        return sorted(pool.written, key=lambda s: s.shard_id), skipped
    finally:
        for actor in actors:
            ray.kill(actor)
        from ray.util.placement_group import remove_placement_group

        for pg in groups:
            remove_placement_group(pg)
        if started_here:
            ray.shutdown()


SHARDS_PER_ACTOR = 3  #: shards in flight per actor: one running, two queued behind it


class _Pool:
    """Shards to actors, ``SHARDS_PER_ACTOR`` in flight each. A shard whose actor died (killed, out of memory, its
    node left) is redone on the next free actor; the dead actor's slots rejoin once Ray has restarted it, wherever
    it fits. When no actor is alive or coming back for ``timeout_s``, the run stops (finished shards kept; a rerun
    resumes)."""

    def __init__(
        self,
        ray: Any,
        actors: list[Any],
        progress: Progress,
        stage: str,
        timeout_s: float,
        committed: Callable[[int], ShardStats | None],
    ):
        self.ray, self.progress, self.stage, self.timeout_s = ray, progress, stage, timeout_s
        self.committed = committed
        self.idle: deque[Any] = deque(a for a in actors for _ in range(SHARDS_PER_ACTOR))
        self.running: dict[Any, tuple[Any, ShardSpec, list[Any]]] = {}  # stats ref -> (actor, shard, items)
        self.restarting: dict[Any, Any] = {}  # ready ref -> actor
        self.redo: deque[tuple[ShardSpec, list[Any]]] = deque()
        self.written: list[ShardStats] = []
        self.stalled_since: float | None = None

    def submit(self, spec: ShardSpec, items: list[Any]) -> None:
        self.redo.append((spec, items))
        while self.redo:
            while not self.idle or (self.running and self._any_done()):
                self.step(block=not self.idle)
            actor = self.idle.popleft()
            spec, items = self.redo.popleft()
            self.running[actor.run.remote(spec, items)] = (actor, spec, items)

    def finish(self) -> None:
        while self.running or self.redo:
            if self.redo and self.idle:
                self.submit(*self.redo.popleft())
            else:
                self.step(block=True)

    def _drop(self, actor: Any) -> None:
        """A dead actor's slots leave the pool (they would queue work on it) and rejoin once Ray restarted it."""
        free = sum(a is actor for a in self.idle)
        self.idle = deque(a for a in self.idle if a is not actor)
        for _ in range(free + 1):
            self.restarting[actor.ready.remote()] = actor

    def _done(self, stats: ShardStats) -> None:
        advance_shard(self.progress, self.stage, stats)
        self.written.append(stats)

    def _any_done(self) -> bool:
        return bool(self.ray.wait(list(self.running), num_returns=1, timeout=0)[0])

    def step(self, block: bool) -> None:
        ray = self.ray
        refs = list(self.running) + list(self.restarting)
        finished, _ = ray.wait(refs, num_returns=1, timeout=5.0 if block else 0) if refs else ([], [])
        for ref in finished:
            if ref in self.restarting:
                actor = self.restarting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:  # died again while restarting: wait for the next restart
                    self.restarting[actor.ready.remote()] = actor
                    continue
                log.info("a restarted worker rejoined the pool")
                self.idle.append(actor)
                continue
            actor, spec, items = self.running.pop(ref)
            try:
                stats = ShardStats.model_validate_json(_get(ray, ref, actor_died=None))
            except ray.exceptions.RayActorError as exc:
                self._drop(actor)
                on_disk = self.committed(spec.shard_id)  # its writer thread may have committed it before the kill
                if on_disk is not None:
                    log.info("the worker that committed shard %s died before reporting it; kept", spec.name)
                    self._done(on_disk)
                    continue
                log.warning(
                    "the worker running shard %s died (%s); redoing the shard on another worker",
                    spec.name,
                    str(exc).splitlines()[0],
                )
                self.redo.append((spec, items))
                continue
            self.idle.append(actor)
            self._done(stats)
        if self.idle or self.running:
            self.stalled_since = None
        elif block:  # every worker is dead or restarting
            self.stalled_since = self.stalled_since or time.monotonic()
            if time.monotonic() - self.stalled_since > self.timeout_s:
                raise CaprlError(
                    f"every Ray worker died and none came back within {self.timeout_s:g} s (the "
                    f"cluster has {_free(ray)} free); finished shards are kept, rerun to resume"
                )


def _get(ray: Any, ref: Any, actor_died: str | None = "a Ray worker could not start") -> Any:
    """``ray.get``; the worker's own error (ShardFailed, a CaprlError) is raised as itself; an actor that died is a
    CaprlError with ``actor_died`` (None: raised as Ray's error, for the caller to redo the shard)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None
    except ray.exceptions.RayActorError as exc:
        if actor_died is None:
            raise
        raise CaprlError(f"{actor_died}: {exc}") from None


def _start_actors(
    ray: Any,
    factory: WorkerFactory,
    max_retries: int,
    num_workers: int,
    resources: WorkerResources | None,
    groups: list[Any],
) -> list[Any]:
    res = (resources or WorkerResources(1.0, 0.0, False)).on(ray.cluster_resources().get("GPU", 0))
    _check_fits(ray, res)
    log.info(
        "ray: %d worker(s), each %g CPU / %g GPU%s",
        num_workers,
        res.num_cpus,
        res.num_gpus,
        " in a placement group of its own" if res.tensor_parallel else "",
    )
    cls = ray.remote(_ShardActor)
    actors = []
    for _ in range(num_workers):
        # restarted without limit; a call on a dead actor is not retried by Ray: the pool redoes the shard elsewhere
        opts: dict[str, Any] = {
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": SHARDS_PER_ACTOR + 1,
        }  # + ready()
        if res.tensor_parallel:
            opts.update(_own_bundle(res, groups))
        actors.append(cls.options(**opts).remote(factory, max_retries))
    pending = [a.ready.remote() for a in actors]
    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=res.start_timeout_s)
    if len(ready) < len(pending):
        raise CaprlError(
            f"Ray placed {len(ready)} of {num_workers} worker(s) of {res.num_cpus:g} CPU / "
            f"{res.num_gpus:g} GPU within {res.start_timeout_s:g} s; the cluster has {_free(ray)} "
            "free. Lower runner.num_workers or the GPUs per worker (tensor_parallel_size, "
            "runner.resources.num_gpus), add nodes, or raise runner.resources.start_timeout_s if "
            "nodes are still joining"
        )
    for ref in ready:
        _get(ray, ref)  # a worker that failed to build its engine says why here
    return actors


def _free(ray: Any) -> str:
    free = ray.available_resources()
    return f"{free.get('CPU', 0):g} CPU / {free.get('GPU', 0):g} GPU"


def _check_fits(ray: Any, res: WorkerResources) -> None:
    """A worker that no node can hold would wait forever: say so before starting."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(n.get("GPU", 0) >= res.num_gpus and n.get("CPU", 0) >= res.num_cpus for n in nodes):
        return
    largest: dict[str, Any] = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    raise CaprlError(
        f"a worker needs {res.num_cpus:g} CPU and {res.num_gpus:g} GPU on one node; the largest node "
        f"of the Ray cluster has {largest.get('CPU', 0):g} CPU / {largest.get('GPU', 0):g} GPU. Lower "
        "tensor_parallel_size or runner.resources (num_gpus, num_cpus), or add a larger node"
    )


def _own_bundle(res: WorkerResources, groups: list[Any]) -> dict[str, Any]:
    """Remote args for one tensor-parallel worker: a placement group of its own (one STRICT_PACK bundle: its GPUs on
    one node) that its engine's own Ray workers join."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([res.bundle], strategy="STRICT_PACK")
    groups.append(pg)
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}
