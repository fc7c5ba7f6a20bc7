from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from caprl_kit.config import ConfigModel, registry_name
from caprl_kit.runners import RUNNERS
from caprl_kit.runners.placement import ResourcesConfig


class RunnerConfig(ConfigModel):
    name: Annotated[str, AfterValidator(registry_name(RUNNERS))] = Field(
        "local", description="local | multiprocess | ray"
    )
    num_workers: int = Field(1, ge=1, description="Worker processes / Ray actors (one engine each)")
    address: str | None = Field(None, description="Ray cluster address (runner: ray); null starts a local Ray")
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Per worker (multiprocess, ray): CPUs and GPUs; null: derived"
    )
    max_shard_retries: int = Field(1, ge=0, description="Times a failed shard is retried before the run fails")
    decode_workers: int = Field(
        2,
        ge=0,
        description="caprl curate: threads per worker decoding media ahead of the "
        "engine (0: inline; annotate: batching.decode_workers); a GPU engine on 2 MP photos "
        "or 20 s videos wants 4-8 (docs/engines.md)",
    )
    decode_processes: bool = Field(
        False,
        description="caprl curate: decode in decode_workers spawned processes "
        "per worker instead of threads (annotate: batching.decode_processes): for video "
        "when the engine's Python side keeps the GIL busy (docs/dataflow.md)",
    )
    decode_ahead: int = Field(
        64,
        ge=1,
        description="caprl curate: most decoded items waiting for the engine per "
        "worker, bounding memory whatever the shard size (annotate: batching.window)",
    )
