"""Ray Data runner (``runner: ray``): the same worker code on a local Ray instance or a cluster.

The driver streams the input into shards and puts each shard's items into Ray's object store (which spills to
disk), then a Ray Data pipeline over the pending shard ids maps an actor pool of ``num_workers`` workers — each
actor builds its worker (and its engine) once and processes whole shards, writing the Parquet shard and its stats
sidecar itself. Only the small stats come back to the driver, which advances the progress bar as they arrive.

On a cluster, pass ``runner.address`` (e.g. ``ray://head:10001`` or ``auto``) and install caprl-kit on the
workers; outputs must then be on shared storage (an fsspec URL such as ``s3://``).
"""

from __future__ import annotations

from typing import Any, Iterable

from caprl_kit._optional import require
from caprl_kit.commands import NullProgress, Progress
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.runners.local import WorkerFactory, run_one
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
        ds = ray.data.from_items(pending).map_batches(
            _ShardActor,
            fn_constructor_args=(factory, max_retries),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(pending))),
            num_cpus=1,
        )
        written = []
        for row in ds.iter_rows():
            stats = ShardStats.model_validate_json(row["stats"])
            progress.advance(stage, items=stats.n_items, failed=stats.n_failed,
                             tokens=int(stats.metrics.get("completion_tokens", 0)))
            written.append(stats)
        return sorted(written, key=lambda s: s.shard_id), skipped
    finally:
        if started_here:
            ray.shutdown()
