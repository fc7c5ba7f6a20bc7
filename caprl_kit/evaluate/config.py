"""``caprl eval`` config (spec §5): caption benchmark media, answer from captions alone, score (Prism), plus the
held-out QA utility on a curated set."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BackendConfig, SamplingConfig, one_answer
from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name
from caprl_kit.evaluate.captions_file import CaptionsFileConfig
from caprl_kit.evaluate.metrics import SCORERS
from caprl_kit.io.config import DecodeConfig, MediaConfig, Paths, ShardingConfig, refuse_moved_decode_keys
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.config import FaithfulnessConfig, QARewardConfig
from caprl_kit.runners.config import RunnerConfig


def _scorer_name(name: str) -> str:
    if name != "auto" and name not in SCORERS:
        raise ValueError(SCORERS.unknown_message(name))
    return name


class BenchmarkConfig(ConfigModel):
    name: str = Field(
        description="Task name; with compat fixed, scorer auto reads it: 'info' -> anls_chart, 'char' -> chart, "
        "a single-letter gold -> mcq, else math"
    )
    path: str = Field(
        description="Official lmm_eval_*.json (list of rows with image, prompt, answer), or JSONL/"
        "Parquet rows with image|video, question, [options], answer; with compat official, scorer auto reads "
        "this path as written, as the official evaluator reads its --data-path ('info', 'char', else math)"
    )
    image_root: str | None = Field(None, description="Root for relative media paths (default: the file's folder)")
    media_type: Literal["image", "video"] = "image"
    scorer: Annotated[str, AfterValidator(_scorer_name)] = Field(
        "auto", description="auto | math | chart | anls_chart | mcq"
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows")


def _caption_backend() -> BackendConfig:  # spec §5.1: 4 captions, temperature 1.0, 2048 tokens
    return BackendConfig(sampling=SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_tokens=2048))


def _answer_backend() -> BackendConfig:  # spec §5.1: one answer per caption, temperature 1.0, 2048 tokens
    return BackendConfig(sampling=SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_tokens=2048))


class QAUtilityConfig(ConfigModel):
    dataset: Paths = Field(
        description="Curated QA Parquet (caprl curate output, e.g. dataset/val.parquet); several: a glob or a list "
        "of files, read one after the other"
    )
    qa: QARewardConfig = Field(
        default_factory=lambda: QARewardConfig(mode="all_qa"),
        description="Answerer and mode; all_qa asks every held-out question once",
    )
    limit: int | None = Field(None, ge=1)
    blind_captions: str | None = Field(
        None,
        description="JSONL/Parquet/text file of candidate fixed captions: "
        "reports the image-blind ceiling, the best score one caption reaches on "
        "every item (e.g. the training set's reference captions)",
    )
    blind_caption_column: str = Field("caption", description="Column holding the candidates (JSONL/Parquet)")


class EvalConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.evaluate.pipeline"
    volatile_fields: ClassVar[frozenset[str]] = JobConfig.volatile_fields | {"runner", "label"}

    kind: Literal["eval"] = "eval"
    label: str | None = Field(None, description="Name of the captioner in reports (default: its model)")
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    qa_utility: QAUtilityConfig | None = Field(None, description="Held-out QA utility on a curated set")
    faithfulness: FaithfulnessConfig | None = Field(
        None,
        description="Claim precision of every task's captions (claims checked one by one against the media, or "
        "qa_utility's reference captions); off when null",
    )
    captioner: BackendConfig = Field(default_factory=_caption_backend, description="Captioner under test")
    captions: CaptionsFileConfig | None = Field(
        None,
        description="Precomputed captions (CapRL-2M / CapRL-Video-178K "
        "style file): stage 1 is skipped and the captioner is not used",
    )
    caption_prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field("caprl_image")
    video_caption_prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_video_timestamped"
    )
    answerer: BackendConfig = Field(default_factory=_answer_backend, description="Text LLM answering from captions")
    compat: Literal["fixed", "official"] = Field(
        "fixed",
        description="Scoring: fixed (ours) or official (the official evaluator's, case for case; docs/eval.md "
        "lists every difference)",
    )
    media: MediaConfig = Field(default_factory=MediaConfig)
    sharding: ShardingConfig = Field(default_factory=lambda: ShardingConfig(shard_size=200))
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return refuse_moved_decode_keys(data)

    @model_validator(mode="after")
    def _faithfulness_evidence(self) -> EvalConfig:
        f = self.faithfulness
        if f is not None and f.verifier.evidence == "reference" and self.benchmarks:
            raise FieldIssue(
                "faithfulness.verifier.evidence",
                "is reference, but benchmark rows hold no reference caption (only qa_utility's curated rows can)",
                "check against the media (evidence: media with a VLM verifier), or evaluate qa_utility alone",
            )
        return self

    @model_validator(mode="after")
    def _unique_benchmarks(self) -> EvalConfig:
        issues = []
        seen: set[str] = {"qa_utility"} if self.qa_utility is not None else set()
        for i, bench in enumerate(self.benchmarks):
            if bench.name in seen:
                issues.append(
                    FieldIssue(
                        f"benchmarks.{i}.name",
                        f"'{bench.name}' is already a task name in this eval",
                        "give every benchmark its own name",
                    )
                )
            seen.add(bench.name)
        if self.answerer.sampling.n > 1:
            issues.append(
                one_answer(
                    "answerer.sampling.n",
                    self.answerer.sampling.n,
                    "caprl eval reads one answer per caption",
                    "set it to 1; captioner.sampling.n sets how many captions, each answered once, an item gets",
                )
            )
        raise_issues(issues)
        return self
