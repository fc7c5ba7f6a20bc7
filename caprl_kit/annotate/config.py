"""``caprl annotate`` config: inputs -> captioner back end -> Parquet shards."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BATCH_LIMIT, BackendConfig
from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name, volatile
from caprl_kit.io.config import DecodeConfig, InputConfig, MediaConfig, ShardingConfig, refuse_moved_decode_keys
from caprl_kit.monitors import MonitorConfig
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.config import ComponentConfig, RewardConfig
from caprl_kit.runners.config import RunnerConfig
from caprl_kit.schemas.annotation import AnnotationRow


class PromptConfig(ConfigModel):
    image: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_image", description="Prompt name for images (see caprl_kit/prompts.py)"
    )
    video: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_video_timestamped", description="Prompt name for videos"
    )
    text: str | None = Field(None, description="Custom prompt text for every item; overrides the names")
    system: str | None = Field(None, description="Optional system message")


class BatchingConfig(ConfigModel):
    max_batch_tokens: int = Field(
        32768,
        ge=1,
        description="Cap on estimated prompt tokens (text + visual) per engine call (transformers, "
        "lexical; vllm and openai schedule by vllm.max_num_seqs / openai.max_concurrency)",
    )
    window: int = Field(
        16,
        ge=1,
        description="Items decoded ahead of the engine and sorted by size together before "
        "cutting batches (transformers): decoded media in memory stay within about 2 x window items, "
        "whatever the shard size (vllm, openai: the decode-ahead only, at least half their requests "
        "in flight, up to 64; decode.ahead overrides it)",
    )


class AnnotateOutputConfig(ConfigModel):
    embed_media: bool = Field(False, description="Store the encoded media bytes in each row")
    dedup: bool = Field(False, description="Skip items whose content hash was already captioned in this run")
    export_jsonl: bool = volatile(
        False,
        description="Also write captions.jsonl (CapRL-2M style: path + caption; + captions, all n, when n > 1)",
    )
    clean: bool = Field(
        False,
        description="Also write caption_clean: the first caption without its boilerplate "
        "opener and closing meta remarks (monitors.*); the raw caption is kept",
    )


class VideoWindowsConfig(ConfigModel):
    """Long videos captioned in windows (io/windows.py): each window its own frames (media.video_fps,
    video_min_frames, video_max_frames per window) and request; the row keeps every window's captions with its span
    and, as caption / captions, the windows' captions joined with absolute timestamps."""

    seconds: float = Field(gt=0, description="Window length in seconds (e.g. 60)")
    min_last_s: float | None = Field(
        None, ge=0, description="A last window shorter than this joins the one before it (default: half a window)"
    )


def _select_reward() -> RewardConfig:
    return RewardConfig(components=[ComponentConfig(name="qa_accuracy", weight=1.0)])


class SelectConfig(ConfigModel):
    """Best-of-n recaptioning: the ``backend.sampling.n`` captions of an item are scored and the best is kept as
    ``caption`` (all of them stay in ``captions``, their scores in ``quality``)."""

    reward: RewardConfig = Field(
        default_factory=_select_reward,
        description="The quality: reward.components weigh the terms (qa_accuracy, length, vl_judge, file:...) with "
        "their own blocks (reward.qa.answerer, ...), as in training; default: QA accuracy alone",
    )
    qa_column: str = Field(
        "reward_model.ground_truth",
        description="Input column (dotted: into a struct) with each item's MCQs, read when qa_accuracy is weighted "
        "(caprl curate's rows: reward_model.ground_truth); its top-level column must be in input.carry_columns",
    )


class AnnotateConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.annotate.pipeline"
    volatile_fields: ClassVar[frozenset[str]] = JobConfig.volatile_fields | {"runner", "batching"}

    kind: Literal["annotate"] = "annotate"
    input: InputConfig
    backend: BackendConfig = Field(default_factory=BackendConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    output: AnnotateOutputConfig = Field(default_factory=AnnotateOutputConfig)
    monitors: MonitorConfig = Field(default_factory=MonitorConfig)
    video_windows: VideoWindowsConfig | None = Field(
        None, description="Caption videos in windows of video_windows.seconds (long videos); null: one request each"
    )
    select: SelectConfig | None = Field(
        None, description="Best-of-n: score the n captions of each item and keep the best (needs sampling.n > 1)"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return refuse_moved_decode_keys(data)

    @model_validator(mode="after")
    def _needs_model(self) -> AnnotateConfig:
        issues = []
        if self.backend.name != "lexical" and not self.backend.model:
            issues.append(FieldIssue("backend.model", "is required", "set backend.model to a hub id or local path"))
        if self.output.dedup and self.runner.name != "local":
            issues.append(
                FieldIssue(
                    "output.dedup",
                    f"works with runner.name=local only (content hashes are shared "
                    f"within one process; with {self.runner.name} each worker would see only its "
                    "own items)",
                    "use runner.name=local, or turn dedup off and drop duplicates by content_hash after",
                )
            )
        clash = sorted(set(self.input.carry_columns) & set(AnnotationRow.model_fields))
        if clash:
            issues.append(
                FieldIssue(
                    "input.carry_columns",
                    f"{clash} are columns caprl writes in every annotation row",
                    "rename those input columns, or leave them out of carry_columns",
                )
            )
        issues += self._select_issues()
        limit = BATCH_LIMIT.get(self.backend.name)
        if limit is not None and self.batching.max_batch_tokens != BatchingConfig().max_batch_tokens:
            issues.append(
                FieldIssue(
                    "batching.max_batch_tokens",
                    f"is ignored by the {self.backend.name} back end: {limit[1]}",
                    f"set backend.{limit[0]} instead, or remove max_batch_tokens",
                )
            )
        raise_issues(issues)
        return self

    def _select_issues(self) -> list[FieldIssue]:
        s = self.select
        if s is None:
            return []
        out = []
        if self.backend.sampling.n < 2:
            out.append(
                FieldIssue(
                    "select",
                    f"picks the best of the captions sampled per item, but backend.sampling.n is {self.backend.sampling.n}",
                    "set backend.sampling.n to the number of candidates (e.g. 4) and a temperature above 0",
                )
            )
        weighted = {c.name for c in s.reward.components if c.weight}
        top = s.qa_column.split(".")[0]
        if "qa_accuracy" in weighted and top not in self.input.carry_columns:
            out.append(
                FieldIssue(
                    "select.qa_column",
                    f"reads '{s.qa_column}', but the input column '{top}' is not carried to the rows",
                    f"add {top} to input.carry_columns",
                )
            )
        return out
