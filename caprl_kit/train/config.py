"""``caprl train`` config: GRPO with the CapRL reward, embedded (TRL) or on a cluster (verl)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from caprl_kit.backends.config import BackendConfig
from caprl_kit.config import ConfigModel, JobConfig


class DataConfig(ConfigModel):
    train_files: list[str] = Field(description="Curated QA Parquet files (caprl curate output)")
    val_files: list[str] = Field(default_factory=list, description="Validation Parquet files")


class TrainConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.train.pipeline"

    kind: Literal["train"] = "train"
    trainer: Literal["trl", "verl"] = Field("trl", description="trl: one machine; verl: multi-GPU on Ray")
    policy: str = Field(description="Captioner to train: hub id or local path")
    data: DataConfig
    answerer: BackendConfig = Field(default_factory=BackendConfig, description="Text LLM computing the QA reward")
