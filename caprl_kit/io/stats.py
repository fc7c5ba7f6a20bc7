"""Per-shard statistics: counts per status, a capped error histogram, timings, command metrics, where it ran."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from caprl_kit.schemas.run import ShardStats


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatsBuilder:
    """Collects what a shard did. Keeps at most ``max_errors`` distinct messages; the rest are counted."""

    def __init__(
        self,
        shard_id: int,
        artifact: str,
        max_errors: int = 20,
        max_message_len: int = 200,
        opened: tuple[str, float] | None = None,
    ):
        """``opened``: (ISO time, perf_counter) when the shard's work began, if before this builder (a streamed
        shard is opened when its first item is planned and committed when its last response arrives)."""
        self.shard_id = shard_id
        self.artifact = artifact
        self.max_errors = max_errors
        self.max_message_len = max_message_len
        self.status_counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_truncated = 0
        self.metrics: defaultdict[str, float] = defaultdict(float)
        self.started_at, self._t0 = opened or (utc_now(), time.perf_counter())

    def add(self, status: str, error_message: str | None = None) -> None:
        self.status_counts[status] += 1
        if status != "ok" and error_message:
            key = f"{status}: {error_message}"[: self.max_message_len]
            if key in self.errors or len(self.errors) < self.max_errors:
                self.errors[key] += 1
            else:
                self.errors_truncated += 1

    def add_metric(self, name: str, value: float) -> None:
        self.metrics[name] += value

    def build(self) -> ShardStats:
        n = sum(self.status_counts.values())
        ok = self.status_counts.get("ok", 0)
        duration = time.perf_counter() - self._t0
        metrics = {k: float(v) for k, v in self.metrics.items()}
        metrics["items_per_s"] = n / duration if duration > 0 else 0.0
        return ShardStats(
            shard_id=self.shard_id,
            artifact=self.artifact,
            n_items=n,
            n_ok=ok,
            n_failed=n - ok,
            status_counts=dict(self.status_counts),
            errors=dict(self.errors.most_common()),
            errors_truncated=self.errors_truncated,
            started_at=self.started_at,
            finished_at=utc_now(),
            duration_s=round(duration, 4),
            metrics=metrics,
            worker=worker_info(),
        )


def worker_info() -> dict[str, Any]:
    """Where this process runs: host, pid, Ray node id (under Ray) and the GPU ids it was given (Ray's, else
    ``CUDA_VISIBLE_DEVICES``)."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "node_id": None, "gpu_ids": []}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # outside a task or actor: no node context
            info["node_id"] = ray.get_runtime_context().get_node_id()
            info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    if not info["gpu_ids"] and os.environ.get("CUDA_VISIBLE_DEVICES"):
        info["gpu_ids"] = [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    return info
