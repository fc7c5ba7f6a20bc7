"""``caprl eval`` config (spec §5): caption benchmark media, answer from captions alone, score (Prism), plus the
held-out QA utility on a curated set."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BackendConfig, SamplingConfig, one_answer
from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name
from caprl_kit.evaluate.captions_file import CaptionsFileConfig
from caprl_kit.evaluate.layouts import LAYOUTS
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
    image_root: str | None = Field(
        None,
        description="Root for relative media paths (default: the file's folder); with a video layout, the folder "
        "holding its videos (default: where VLMEvalKit puts them beside the file; docs/eval.md)",
    )
    media_type: Literal["image", "video"] = Field("image", description="image | video (a video layout: video)")
    scorer: Annotated[str, AfterValidator(_scorer_name)] = Field(
        "auto", description="auto | math | chart | anls_chart | mcq (a video layout scores as its benchmark does)"
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows")
    layout: Annotated[str, AfterValidator(registry_name(LAYOUTS))] = Field(
        "caprl",
        description="How the file is laid out: caprl (the official Prism image files, our JSONL/Parquet rows) or "
        "the VLMEvalKit file of a video benchmark: videomme | mvbench | mmvu | mmbench_video | tomato | timelens",
    )

    @model_validator(mode="before")
    @classmethod
    def _layout_media(cls, data: Any) -> Any:
        """A video layout's media are videos and its benchmark scores them: ``media_type: image`` or a ``scorer``
        other than auto is refused with it, and media_type is set to video."""
        if (
            not isinstance(data, dict)
            or data.get("layout", "caprl") in ("caprl", None)
            or data["layout"] not in LAYOUTS
        ):
            return data
        media = LAYOUTS.get(data["layout"]).media_type
        issues = []
        if data.get("media_type", media) != media:
            issues.append(FieldIssue("media_type", f"is {media} with layout {data['layout']}", "remove media_type"))
        if data.get("scorer", "auto") != "auto":
            issues.append(
                FieldIssue(
                    "scorer",
                    f"layout {data['layout']} scores answers as its benchmark does",
                    "remove scorer (docs/eval.md lists each layout's scoring)",
                )
            )
        raise_issues(issues)
        return {**data, "media_type": media}


def _place(url: str) -> str:
    return url.rstrip("/") if "://" in url else os.path.abspath(url)


def _caption_backend() -> BackendConfig:  # spec §5.1: 4 captions, temperature 1.0, 2048 tokens
    return BackendConfig(sampling=SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_tokens=2048))


def _answer_backend() -> BackendConfig:  # spec §5.1: one answer per caption, temperature 1.0, 2048 tokens
    return BackendConfig(sampling=SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_tokens=2048))


def _judge_backend() -> BackendConfig:  # spec §5.2 MMVU_JUDGE_MODEL=gpt-4o; VLMEvalKit's judge: temperature 0, 2048
    return BackendConfig(name="openai", model="gpt-4o", sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=2048))


class JudgeConfig(ConfigModel):
    backend: BackendConfig = Field(
        default_factory=_judge_backend,
        description="The judge: any OpenAI-compatible endpoint (name: openai, openai.base_url) or a local engine",
    )
    skip: bool = Field(
        False,
        description="Call no judge (--skip-judge): open-ended answers without a stored verdict are left "
        "awaiting_judge, out of M_Acc/BoN; judge them later with caprl eval judge RUN_DIR",
    )

    @model_validator(mode="after")
    def _one_verdict(self) -> JudgeConfig:
        if self.backend.sampling.n > 1:
            raise one_answer(
                "backend.sampling.n", self.backend.sampling.n, "the judge gives one verdict per answer", "set it to 1"
            )
        return self


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
    length_cuts: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 256, 512, 1024],
        description="utility@k: the QA utility again with every caption cut at each of these lengths (tokens of "
        "length_tokenizer or the captioner's tokenizer, else whitespace words), and the curve's area; empty: off",
    )
    length_tokenizer: str | None = Field(
        None,
        description="The tokenizer length_cuts count in (hub id or local path); null: the captioner model's, or "
        "whitespace words when none loads (e.g. precomputed captions)",
    )

    @model_validator(mode="after")
    def _length_cuts(self) -> QAUtilityConfig:
        issues = []
        if len(set(self.length_cuts)) != len(self.length_cuts):
            issues.append(FieldIssue("length_cuts", f"repeats a length: {self.length_cuts}", "list each length once"))
        if not self.length_cuts and self.length_tokenizer is not None:
            issues.append(
                FieldIssue(
                    "length_tokenizer",
                    "is not used: utility@k is off (length_cuts is empty)",
                    "remove it, or list the lengths in length_cuts",
                )
            )
        raise_issues(issues)
        return self


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
    captions_from: str | None = Field(
        None,
        description="A previous caprl eval run of the same benchmarks: its captions (captions/<task>/) are this "
        "run's stage 1 and only the answers are made (e.g. with another answerer); the captioner is not used",
    )
    answerer: BackendConfig = Field(default_factory=_answer_backend, description="Text LLM answering from captions")
    judge: JudgeConfig | None = Field(
        None,
        description="LLM judge of the open-ended answers (layouts mmvu, mmbench_video); without one they are left "
        "awaiting_judge",
    )
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
        raise_issues(issues + self._video_keys())
        return self

    def _video_keys(self) -> list[FieldIssue]:
        """The keys that mean something only with some benchmarks or sources, refused where they mean nothing."""
        issues = []
        judged = [b.name for b in self.benchmarks if LAYOUTS.get(b.layout).judge is not None]
        if self.judge is not None and not judged:
            issues.append(
                FieldIssue(
                    "judge",
                    "no benchmark has open-ended questions for it to judge (layouts mmvu, mmbench_video)",
                    "remove judge",
                )
            )
        if self.captions_from is not None and self.captions is not None:
            issues.append(FieldIssue("captions_from", "and captions both give stage 1's captions", "keep one of them"))
        output = self.output_dir
        if self.captions_from is not None and output is not None and _place(self.captions_from) == _place(output):
            issues.append(
                FieldIssue(
                    "captions_from",
                    "is the output folder: its answers were made by the earlier run",
                    "write the new answers to another --output",
                )
            )
        if self.compat == "official" and self.benchmarks and all(b.layout != "caprl" for b in self.benchmarks):
            issues.append(
                FieldIssue(
                    "compat",
                    "official selects the official Prism image scorers; every benchmark here is a video layout, "
                    "scored as its benchmark does",
                    "remove compat",
                )
            )
        return issues
