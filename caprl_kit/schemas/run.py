"""Run bookkeeping: the per-shard stats sidecar and the run manifest."""

from __future__ import annotations

from pydantic import BaseModel, Field

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.layout import RUN_MANIFEST, SHARD_STATS


class WorkerInfo(BaseModel):
    host: str = Field(description="Host name")
    pid: int = Field(description="Process id of the worker")
    node_id: str | None = Field(None, description="Ray node id (runner: ray), else null")
    gpu_ids: list[str] = Field(
        default_factory=list, description="GPUs given to the worker (Ray's or CUDA_VISIBLE_DEVICES)"
    )


class ShardStats(Artifact):
    schema_name = "shard_stats"
    producer = "every command's shard writer (written last: its presence marks the shard done)"
    consumer = "resume, `caprl <verb> status`, run reports"
    file_pattern = SHARD_STATS
    example = {
        "shard_id": 3,
        "artifact": "annotation/v2",
        "n_items": 1000,
        "n_ok": 997,
        "n_failed": 3,
        "status_counts": {"ok": 997, "failed_to_decode": 2, "file_not_found": 1},
        "errors": {"failed_to_decode: cannot identify image file": 2, "file_not_found: no such file": 1},
        "errors_truncated": 0,
        "started_at": "2026-01-01T12:00:00+00:00",
        "finished_at": "2026-01-01T12:03:20+00:00",
        "duration_s": 200.0,
        "metrics": {"completion_tokens": 184000.0, "items_per_s": 5.0},
        "worker": {"host": "gpu-node-3", "pid": 41872, "node_id": "6f2c9d...", "gpu_ids": ["2"]},
        "config_hash": "5d41402abc4b2a76b9719d911017c592",
    }

    shard_id: int = Field(description="Shard number")
    artifact: str = Field(description="schema_name/vN of the rows in the shard")
    n_items: int = Field(description="Rows written")
    n_ok: int = Field(description="Rows with status ok")
    n_failed: int = Field(description="Rows with another status")
    status_counts: dict[str, int] = Field(description="Rows per status")
    errors: dict[str, int] = Field(description="Most frequent error messages (capped) with counts")
    errors_truncated: int = Field(0, description="Error occurrences not listed because of the cap")
    started_at: str = Field(description="ISO-8601 UTC start time")
    finished_at: str = Field(description="ISO-8601 UTC end time")
    duration_s: float = Field(description="Wall time of the shard")
    metrics: dict[str, float] = Field(default_factory=dict, description="Command-specific totals (tokens, ...)")
    worker: WorkerInfo | None = Field(None, description="Where the shard ran (absent in runs before it was recorded)")
    config_hash: str | None = Field(
        None,
        description="Resume identity of the config the shard was made under (the "
        "run manifest's at the time): a resume reuses the shard only under the same",
    )


class RunManifest(Artifact):
    schema_name = "run_manifest"
    producer = "every command, at the start of a run"
    consumer = "resume checks, reports"
    file_pattern = RUN_MANIFEST
    example = {
        "command": "annotate",
        "artifact": "annotation/v2",
        "caprl_kit_version": "0.1.0",
        "created_at": "2026-01-01T12:00:00+00:00",
        "config_hash": "5d41402abc4b2a76b9719d911017c592",
        "input_fingerprint": "7d793037a0760186574b0282f2f435e7",
        "n_items": 10000,
        "n_shards": 10,
        "shard_size": 1000,
        "packages": {"torch": "2.14.1", "transformers": "5.10.4"},
    }

    command: str = Field(description="curate, train, annotate or eval (with the stage for curate)")
    artifact: str = Field(description="schema_name/vN of the shards")
    caprl_kit_version: str = Field(description="Version that started the run")
    created_at: str = Field(description="ISO-8601 UTC time of the first start")
    config_hash: str = Field(
        description="Resume identity of the stage's config (caprl_kit.config.config_hash: "
        "volatile fields left out, prompt texts in)"
    )
    input_fingerprint: str = Field(description="sha256 over the ordered input keys (and sizes where known)")
    n_items: int = Field(description="Items in the input")
    n_shards: int = Field(description="Shards planned")
    shard_size: int = Field(description="Items per shard")
    packages: dict[str, str] = Field(description="Versions of the packages that shape the output")
