"""Ray Data runner (``runner: ray``): the same worker code on a local Ray instance or a cluster.

The driver streams the input into shards and puts each shard's items into Ray's object store (which spills to
disk), then a Ray Data pipeline over the pending shard ids maps an actor pool of ``num_workers`` workers — each
actor builds its worker (and its engine) once and processes whole shards, writing the Parquet shard and its stats
sidecar itself. Only the small stats come back to the driver, which advances the progress bar as they arrive.

Each actor asks for what its engines need (``placement.worker_resources``: a vllm engine its tensor-parallel size
in GPUs, a transformers engine one; ``runner.resources`` overrides), so Ray sets its ``CUDA_VISIBLE_DEVICES`` to
GPUs of its own (an actor that asks for none sees none). A worker needing more than one GPU (tensor parallel) gets a
placement group of its own with one STRICT_PACK bundle, so its GPUs sit on one node, and child tasks (vLLM's Ray
workers) are scheduled inside it. Every shard's stats sidecar records the host, pid, Ray node id and GPU ids that
ran it (``caprl annotate status`` shows shards per node).

On a cluster, pass ``runner.address`` (e.g. ``ray://head:10001`` or ``auto``) and install caprl-kit on the
workers; outputs must then be on shared storage (an fsspec URL such as ``s3://``).
"""

from __future__ import annotations

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

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import ray

        out = []
        for shard_id, start, stop, ref in zip(batch["shard_id"], batch["start"], batch["stop"], batch["ref"]):
            items = ray.get(ref)
            spec = ShardSpec(int(shard_id), int(start), int(stop))
            out.append(run_one(self.worker, spec, items, self.max_retries).model_dump_json())
        return {"stats": out}


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
    require("ray.data", extra="ray")
    import ray.data

    progress = progress or NullProgress()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    groups: list[Any] = []
    try:
        pending = []
        skipped = 0
        for spec, items in shards:
            if spec.shard_id in done:
                skipped += 1
                continue
            pending.append({"shard_id": spec.shard_id, "start": spec.start, "stop": spec.stop, "ref": ray.put(items)})
        if not pending:
            return [], skipped
        res = (resources or WorkerResources(1.0, 0.0, False)).on(ray.cluster_resources().get("GPU", 0))
        _check_fits(ray, res)
        ctx.wait_for_min_actors_s = int(res.start_timeout_s)  # every worker placed before work starts, or an error
        log.info("ray: %d worker(s), each %g CPU / %g GPU%s", min(num_workers, len(pending)), res.num_cpus,
                 res.num_gpus, " in a placement group of its own" if res.tensor_parallel else "")
        ds = ray.data.from_items(pending).map_batches(
            _ShardActor,
            fn_constructor_args=(factory, max_retries),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(pending))),
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus or None,
            **({"ray_remote_args_fn": lambda: _own_bundle(res, groups)} if res.tensor_parallel else {}),
        )
        written = []
        try:
            for row in ds.iter_rows():
                stats = ShardStats.model_validate_json(row["stats"])
                progress.advance(stage, items=stats.n_items, failed=stats.n_failed,
                                 tokens=int(stats.metrics.get("completion_tokens", 0)))
                written.append(stats)
        except ray.exceptions.GetTimeoutError as exc:
            raise CaprlError(f"Ray could not place {min(num_workers, len(pending))} worker(s) of {res.num_cpus:g} CPU "
                             f"/ {res.num_gpus:g} GPU within {res.start_timeout_s:g} s; the cluster has "
                             f"{_free(ray)} free. Lower runner.num_workers or the GPUs per worker "
                             "(tensor_parallel_size, runner.resources.num_gpus), add nodes, or raise "
                             "runner.resources.start_timeout_s if nodes are still joining") from exc
        return sorted(written, key=lambda s: s.shard_id), skipped
    finally:
        from ray.util.placement_group import remove_placement_group

        for pg in groups:
            remove_placement_group(pg)
        if started_here:
            ray.shutdown()


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
