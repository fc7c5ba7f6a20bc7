"""``caprl eval`` config (spec §5): caption benchmark images, answer from captions alone, score."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from caprl_kit.backends.config import BackendConfig
from caprl_kit.config import JobConfig


class EvalConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.evaluate.pipeline"

    kind: Literal["eval"] = "eval"
    benchmark: str = Field(description="Benchmark folder in the official Prism layout")
    captioner: BackendConfig = Field(default_factory=BackendConfig, description="Captioner under test")
    answerer: BackendConfig = Field(default_factory=BackendConfig, description="Text LLM answering from captions")
    compat: Literal["fixed", "official"] = Field("fixed", description="official reproduces the scorer's quirks")
