"""Ray runner (``runner: ray``): the same worker code on a local Ray instance or a cluster.

``num_workers`` Ray actors each build their worker (and its engine) once and process whole shards, writing the
Parquet shard and its stats sidecar themselves; only the small stats come back. The driver streams the input:
each shard is handed to the next free actor as soon as it is cut, at most one in flight per actor (plus the one
being cut), so work starts while the listing is still running and the driver holds a few shards at a time, whatever
the input size (items travel as paths and metadata; decoded media never pass through the driver).

Each actor asks for what its engines need (``placement.worker_resources``: a vllm engine its tensor-parallel size
in GPUs, a transformers engine one; ``runner.resources`` overrides), so Ray sets its ``CUDA_VISIBLE_DEVICES`` to
GPUs of its own (an actor that asks for none sees none). A worker needing more than one GPU (tensor parallel) gets a
placement group of its own with one STRICT_PACK bundle, so its GPUs sit on one node, and child tasks (vLLM's Ray
workers) are scheduled inside it. The run waits ``runner.resources.start_timeout_s`` for every actor to be placed,
then stops naming what the cluster lacks (never a silent wait). Every shard's stats sidecar records the host, pid,
Ray node id and GPU ids that ran it (``caprl annotate status`` shows shards per node).

Faults: actors restart without limit and a call that was running on a dead actor is retried on its restart
(``max_restarts=-1, max_task_retries=-1``), so a worker killed mid-shard, or a node that leaves, costs that shard
again and nothing else: the half-written shard was never committed, and every item ends up exactly once.

On a cluster, pass ``runner.address`` (e.g. ``ray://head:10001`` or ``auto``) and install caprl-kit on the
workers; outputs must then be on shared storage (an fsspec URL such as ``s3://``). See docs/cluster.md.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

from caprl_kit._optional import require
from caprl_kit.commands import NullProgress, Progress
from caprl_kit.errors import CaprlError
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.runners.local import WorkerFactory, run_one
from caprl_kit.runners.placement import WorkerResources
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)


class _ShardActor:
    def __init__(self, factory: WorkerFactory, max_retries: int):
        self.worker = factory(NullProgress())
        self.max_retries = max_retries

    def ready(self) -> bool:
        return True

    def run(self, spec: ShardSpec, items: list[Any]) -> str:
        return run_one(self.worker, spec, items, self.max_retries).model_dump_json()


def run_ray(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    factory: WorkerFactory,
    *,
    done: set[int] = frozenset(),  # type: ignore[assignment]
    max_retries: int = 1,
    num_workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    stage: str = "annotate",
    resources: WorkerResources | None = None,
) -> tuple[list[ShardStats], int]:
    ray = require("ray", extra="ray")
    progress = progress or NullProgress()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    groups: list[Any] = []
    actors: list[Any] = []
    written: list[ShardStats] = []
    skipped = 0
    try:
        idle: deque[Any] = deque()
        running: dict[Any, Any] = {}  # ObjectRef of a shard's stats -> the actor running it

        def collect(block: bool) -> None:
            finished, _ = ray.wait(list(running), num_returns=1, timeout=None if block else 0)
            for ref in finished:
                idle.append(running.pop(ref))
                stats = ShardStats.model_validate_json(_get(ray, ref))
                progress.advance(stage, items=stats.n_items, failed=stats.n_failed,
                                 tokens=int(stats.metrics.get("completion_tokens", 0)))
                written.append(stats)

        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            if not actors:  # the first shard to do: start the pool (a finished run starts nothing)
                actors = _start_actors(ray, factory, max_retries, num_workers, resources, groups)
                idle.extend(actors)
            while running and (not idle or _any_done(ray, running)):
                collect(block=not idle)
            actor = idle.popleft()
            running[actor.run.remote(spec, items)] = actor
        while running:
            collect(block=True)
        return sorted(written, key=lambda s: s.shard_id), skipped
    finally:
        for actor in actors:
            ray.kill(actor)
        from ray.util.placement_group import remove_placement_group

        for pg in groups:
            remove_placement_group(pg)
        if started_here:
            ray.shutdown()


def _any_done(ray: Any, running: dict[Any, Any]) -> bool:
    return bool(ray.wait(list(running), num_returns=1, timeout=0)[0])


def _get(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the worker's own error (ShardFailed, a CaprlError): re-raise it
        raise exc.as_instanceof_cause() from None
    except ray.exceptions.RayActorError as exc:  # e.g. its constructor raised: it cannot be restarted
        raise CaprlError(f"a Ray worker died and cannot be restarted: {exc}") from None


def _start_actors(ray: Any, factory: WorkerFactory, max_retries: int, num_workers: int,
                  resources: WorkerResources | None, groups: list[Any]) -> list[Any]:
    res = (resources or WorkerResources(1.0, 0.0, False)).on(ray.cluster_resources().get("GPU", 0))
    _check_fits(ray, res)
    log.info("ray: %d worker(s), each %g CPU / %g GPU%s", num_workers, res.num_cpus, res.num_gpus,
             " in a placement group of its own" if res.tensor_parallel else "")
    cls = ray.remote(_ShardActor)
    actors = []
    for _ in range(num_workers):
        opts: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": -1,
                                "max_task_retries": -1}
        if res.tensor_parallel:
            opts.update(_own_bundle(res, groups))
        actors.append(cls.options(**opts).remote(factory, max_retries))
    pending = [a.ready.remote() for a in actors]
    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=res.start_timeout_s)
    if len(ready) < len(pending):
        raise CaprlError(f"Ray placed {len(ready)} of {num_workers} worker(s) of {res.num_cpus:g} CPU / "
                         f"{res.num_gpus:g} GPU within {res.start_timeout_s:g} s; the cluster has {_free(ray)} "
                         "free. Lower runner.num_workers or the GPUs per worker (tensor_parallel_size, "
                         "runner.resources.num_gpus), add nodes, or raise runner.resources.start_timeout_s if "
                         "nodes are still joining")
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
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    raise CaprlError(f"a worker needs {res.num_cpus:g} CPU and {res.num_gpus:g} GPU on one node; the largest node "
                     f"of the Ray cluster has {largest.get('CPU', 0):g} CPU / {largest.get('GPU', 0):g} GPU. Lower "
                     "tensor_parallel_size or runner.resources (num_gpus, num_cpus), or add a larger node")


def _own_bundle(res: WorkerResources, groups: list[Any]) -> dict[str, Any]:
    """Remote args for one tensor-parallel worker: a placement group of its own (one STRICT_PACK bundle: its GPUs on
    one node) that its engine's own Ray workers join."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([res.bundle], strategy="STRICT_PACK")
    groups.append(pg)
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}
