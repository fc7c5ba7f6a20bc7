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
