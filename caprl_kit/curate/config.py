"""``caprl curate`` config (spec §1): generate MCQs -> parse -> answer with/without media -> filter -> export."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from caprl_kit.backends.config import BackendConfig
from caprl_kit.config import ConfigModel, JobConfig
from caprl_kit.io.config import InputConfig, MediaConfig, ShardingConfig
from caprl_kit.runners.config import RunnerConfig


class FilterConfig(ConfigModel):
    rotations: int = Field(4, ge=1, description="Shuffled answering trials per question (spec §1.4 ROTATE_NUM)")
    min_visual_acc: float = Field(0.75, ge=0, le=1, description="Keep when visual accuracy > this (spec §1.5)")
    max_text_acc: float = Field(0.25, ge=0, le=1, description="Keep when text-only accuracy < this (spec §1.5)")
    max_per_item: int | None = Field(None, ge=1, description="Cap on kept questions per image/video")


class CurateConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.curate.pipeline"
    volatile_fields: ClassVar[frozenset[str]] = JobConfig.volatile_fields | {"runner"}

    kind: Literal["curate"] = "curate"
    input: InputConfig
    generator: BackendConfig = Field(default_factory=BackendConfig, description="LVLM that writes the MCQs")
    answerer: BackendConfig = Field(default_factory=BackendConfig, description="LVLM that answers them")
    filter: FilterConfig = Field(default_factory=FilterConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
