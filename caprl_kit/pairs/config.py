"""``caprl train pairs`` config: a captioner's n samples per image, scored by the CapRL reward, paired for DPO."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BackendConfig
from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name
from caprl_kit.io.config import DecodeConfig, MediaConfig, Paths, ShardingConfig, refuse_moved_decode_keys
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.config import RewardConfig
from caprl_kit.runners.config import RunnerConfig


def _sampler() -> BackendConfig:
    return BackendConfig(name="transformers", sampling={"n": 4, "temperature": 1.0, "max_tokens": 1024})


class PairsDataConfig(ConfigModel):
    path: Paths = Field(
        description="A curated QA file (caprl curate's dataset/train.parquet or .jsonl; image paths, "
        "not embedded bytes): its images are captioned, its questions score them. Several: a glob or a list of "
        "files (all Parquet or all JSONL), read one after the other"
    )
    image_key: str = Field("images", description="Column with the image path(s) (a list: its first entry)")
    id_key: str = Field("id", description="Column with row ids (the row index when the file has none)")
    media_root: str | None = Field(
        None, description="Folder relative image paths resolve against (default: each data file's folder)"
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N rows")


HygieneFlag = Literal["truncated", "repetitive", "boilerplate_opener", "meta_ending", "empty"]


def _skip_flagged_default() -> list[HygieneFlag]:
    return ["truncated", "empty"]


class PairOptions(ConfigModel):
    min_margin: float = Field(0.2, ge=0.0, description="Smallest reward gap between chosen and rejected")
    per_image: int = Field(1, ge=1, description="Most pairs per image (each caption in at most one pair)")
    max_length_ratio: float | None = Field(
        None,
        ge=1.0,
        description="Pair only captions whose token counts are within this ratio (e.g. 1.5), so that "
        "'longer wins' cannot be the whole signal; null: no length control (the chosen-longer share is reported "
        "either way)",
    )
    skip_flagged: list[HygieneFlag] = Field(
        default_factory=_skip_flagged_default,
        description="Captions with these hygiene flags are never chosen (they may still be rejected)",
    )


class PairsConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.pairs.pipeline"
    volatile_fields: ClassVar[frozenset[str]] = JobConfig.volatile_fields | {"runner", "pairs"}

    kind: Literal["pairs"] = "pairs"
    data: PairsDataConfig
    captioner: BackendConfig = Field(
        default_factory=_sampler,
        description="The captioner whose samples are paired (its sampling.n captions per image, temperature > 0)",
    )
    prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_image", description="Caption prompt (sent to the captioner and written as the pairs' prompt)"
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig,
        description="The training reward: terms and the answerer, in-process or a reward service (reward.qa.service)",
    )
    pairs: PairOptions = Field(default_factory=PairOptions)
    media: MediaConfig = Field(default_factory=MediaConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return refuse_moved_decode_keys(data)

    @model_validator(mode="after")
    def _check(self) -> PairsConfig:
        s = self.captioner.sampling
        issues = []
        if s.n < 2:
            issues.append(
                FieldIssue(
                    "captioner.sampling.n",
                    f"is {s.n}: pairs need at least 2 captions per image",
                    "set captioner.sampling.n to 4 or 8",
                )
            )
        if s.temperature == 0:
            issues.append(
                FieldIssue(
                    "captioner.sampling.temperature",
                    "is 0: greedy sampling gives n identical captions",
                    "set a temperature such as 1.0",
                )
            )
        if self.captioner.name != "lexical" and not self.captioner.model:
            issues.append(FieldIssue("captioner.model", "is required", "set captioner.model to a hub id or local path"))
        weighted = {c.name for c in self.reward.components if c.weight}
        if "faithfulness" in weighted and self.reward.faithfulness.verifier.evidence == "reference":
            issues.append(
                FieldIssue(
                    "reward.faithfulness.verifier.evidence",
                    "is reference, but caprl train pairs hands the reward each row's questions and image, no "
                    "reference caption",
                    "set evidence: media with a VLM verifier, or remove the faithfulness term",
                )
            )
        raise_issues(issues)
        return self
