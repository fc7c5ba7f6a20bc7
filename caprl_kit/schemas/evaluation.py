"""Evaluation artifacts (spec §5): one record per scored sample and the run summary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.layout import (
    EVAL_ANSWERS_DIR,
    EVAL_JUDGMENTS_DIR,
    EVAL_RESULTS,
    EVAL_RESULTS_LATEST,
    EVAL_SAMPLES,
    SHARD,
    pattern,
)


class EvalSample(Artifact):
    schema_name = "eval_sample"
    schema_version = 2  # v2: status is never null (v1: null meant ok)
    producer = "caprl eval"
    consumer = "reports, error analysis"
    file_pattern = f"{pattern(EVAL_ANSWERS_DIR, SHARD)}, {pattern(EVAL_JUDGMENTS_DIR, SHARD)}, {EVAL_SAMPLES}"
    example = {
        "task": "chartqa",
        "sample_id": "chartqa_0001",
        "question": "What is the highest value?",
        "gold": "42",
        "caption_index": 0,
        "caption": "A bar chart whose tallest bar reaches 42.",
        "response": "The tallest bar is \\boxed{42}.",
        "prediction": "42",
        "score": 1.0,
        "metric": "relaxed_accuracy",
    }

    task: str = Field(description="Benchmark task name")
    sample_id: str = Field(description="Sample id within the task")
    question: str = Field(description="Question shown to the answerer")
    gold: str = Field(description="Reference answer")
    caption_index: int = Field(description="Which of the item's captions was used")
    caption: str = Field(description="The caption the answerer read")
    response: str = Field(description="Answerer output")
    prediction: str | None = Field(None, description="Answer extracted from the response")
    score: float | None = Field(description="Metric value for this sample (null when it was not scored)")
    metric: str = Field(description="Metric name")
    status: str = Field(
        "ok",
        description="ok, or why the sample was not scored (no_caption, answer_failed; an open-ended answer: "
        "awaiting_judge, judge_failed)",
    )
    error_message: str | None = Field(None, description="Why the sample was not scored, null when ok")


class FaithfulnessResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claim_precision: float | None = Field(
        description="Mean claim precision (supported / verified claims) over the captions with a verified claim"
    )
    hallucinated_claim_rate: float | None = Field(
        description="Unsupported claims over all verified claims of the task's captions"
    )
    unknown_rate: float | None = Field(description="Claims whose verdict was neither yes nor no, over all claims")
    n_captions: int = Field(description="Captions checked")
    n_unverified_captions: int = Field(description="Captions without a verified claim (empty, or all unknown)")
    claims_per_caption: float = Field(description="Mean claims per caption")
    requests_per_caption: float = Field(description="Engine requests per caption (splitting and verifying)")
    tokens_per_caption: float = Field(description="Prompt + completion tokens per caption")
    seconds_per_caption: float = Field(description="Wall time per caption")
    unsupported_examples: list[dict[str, str]] = Field(
        default_factory=list, description="The first unsupported claims: {item, claim}"
    )


class UtilityCut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(description="The cut: every caption's first k tokens (or words: the result's unit)")
    utility: float | None = Field(description="M_Acc with every caption cut at k (null when none was scored)")
    n_cut: int = Field(description="Captions longer than k: cut and answered again (the others keep their score)")


class UtilityAtK(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: str = Field(description="What k counts: tokens (of the tokenizer named) or words (whitespace)")
    tokenizer: str | None = Field(description="The tokenizer counting tokens (null for words)")
    cuts: list[UtilityCut] = Field(description="utility@k per cut, shortest first")
    area: float | None = Field(
        description="Normalised area under utility@k: trapezoids over log2 k divided by the span (1.0: a utility of 1 "
        "at every cut)"
    )
    full: float | None = Field(description="The full-length utility (the task's M_Acc)")
    mean_length: float | None = Field(description="Mean caption length in the unit")
    n_captions: int = Field(description="Captions scored")
    claim_precision: float | None = Field(
        None, description="The captions' claim precision (with faithfulness:; null when off)"
    )


class GroupResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_samples: int = Field(description="Scored samples in the group")
    m_acc: float | None = Field(description="Mean over the group's samples of the mean over their captions")
    bon: float | None = Field(description="Mean over the group's samples of their best caption's score")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The group's benchmark metrics (TimeLens R1@t and mIoU, MMBench-Video's rating)",
    )


class TaskResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="Metric name")
    m_acc: float | None = Field(
        description="Mean accuracy over all captions (the paper's number); null when no sample could be scored"
    )
    bon: float | None = Field(description="Best-of-n accuracy over an item's captions; null when none was scored")
    n_samples: int = Field(description="Scored samples")
    n_failed: int = Field(0, description="Samples not scored (no caption, answerer failed): left out of m_acc/bon")
    failed: dict[str, int] = Field(default_factory=dict, description="Unscored samples per reason")
    blind_ceiling: float | None = Field(
        None,
        description="qa_utility: the best score one fixed caption reaches on "
        "every item (what a captioner that ignores the image can get)",
    )
    blind_caption: str | None = Field(None, description="The fixed caption reaching blind_ceiling")
    cannot_answer_rate: float | None = Field(
        None,
        description="qa_utility: share of the answerer's answers that "
        "took the cannot-answer option (the caption lacked the answer), over "
        "trials that offered it (qa.mode sample/shuffle; null for all_qa)",
    )
    caption_monitors: dict[str, float] = Field(
        default_factory=dict,
        description="Share of the task's captions per "
        "hygiene flag (truncated, repetitive, boilerplate_opener, meta_ending, "
        "empty; caprl_kit/monitors.py)",
    )
    faithfulness: FaithfulnessResult | None = Field(
        None, description="Claim precision of the task's captions (eval's faithfulness: block; null when off)"
    )
    utility_at_k: UtilityAtK | None = Field(
        None,
        description="qa_utility: the utility with every caption cut at k tokens (qa_utility.length_cuts; null when "
        "off)",
    )
    breakdown: dict[str, dict[str, GroupResult]] = Field(
        default_factory=dict,
        description="A video benchmark's own breakdown: dimension -> group -> its result (Video-MME by duration, "
        "MVBench by task, MMVU by question type and subject, MMBench-Video by capability, TOMATO by task and "
        "demonstration, TimeLens by subset)",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The numbers a video benchmark's own table reports beside M_Acc/BoN (e.g. Video-MME per "
        "duration, TimeLens R1@0.3/0.5/0.7 and mIoU, MMBench-Video's mean 0-3 rating)",
    )


class EvalResults(Artifact):
    schema_name = "eval_results"
    producer = "caprl eval"
    consumer = "reports, comparisons"
    file_pattern = f"{EVAL_RESULTS}, {EVAL_RESULTS_LATEST}"
    example = {
        "captioner": "internlm/CapRL-3B",
        "answerer": "internlm/CapRL-Eval-3B",
        "compat": "fixed",
        "tasks": {"chartqa": {"metric": "relaxed_accuracy", "m_acc": 0.61, "bon": 0.78, "n_samples": 400}},
        "average": 0.61,
        "created_at": "2026-01-01T12:00:00+00:00",
    }

    captioner: str = Field(description="Captioner model id or path")
    answerer: str = Field(description="Answerer model id or path")
    compat: str = Field(description="fixed, or official to reproduce the official scorer's quirks")
    tasks: dict[str, TaskResult] = Field(description="Per-task results")
    average: float | None = Field(description="Mean of the tasks' m_acc over the tasks with a score (null if none)")
    created_at: str = Field(description="ISO-8601 UTC time")
