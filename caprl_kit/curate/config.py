"""``caprl curate`` config (spec §1): generate MCQs -> parse -> answer with/without media -> filter -> export."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BackendConfig, SamplingConfig, one_answer
from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name
from caprl_kit.io.config import DecodeConfig, InputConfig, MediaConfig, ShardingConfig, refuse_moved_decode_keys
from caprl_kit.prompts import PROMPTS
from caprl_kit.runners.config import RunnerConfig


def _generator() -> BackendConfig:  # spec §1.2: temperature 0.1, 2048 tokens, repetition penalty 1.05
    return BackendConfig(
        name="openai", sampling=SamplingConfig(temperature=0.1, max_tokens=2048, repetition_penalty=1.05)
    )


def _answerer() -> BackendConfig:  # spec §1.4: temperature 0.1, 4 tokens, repetition penalty 1.05
    return BackendConfig(
        name="transformers", sampling=SamplingConfig(temperature=0.1, max_tokens=4, repetition_penalty=1.05)
    )


class GenerateConfig(ConfigModel):
    backend: BackendConfig = Field(default_factory=_generator, description="LVLM writing the MCQs (e.g. 72B)")
    system_prompt: str | None = Field(None, description="Generation prompt (system); None: the CapRL prompt")
    user_text: str = Field("Here is the image", description="Text after the media in the user turn (spec §1.2)")
    max_questions: int | None = Field(None, ge=1, description="Keep at most this many parsed questions per item")

    @model_validator(mode="after")
    def _one_generation(self) -> GenerateConfig:
        if self.backend.sampling.n > 1:
            raise one_answer(
                "backend.sampling.n",
                self.backend.sampling.n,
                "the generate stage parses one generation per item",
                "set it to 1",
            )
        return self


class AnswerConfig(ConfigModel):
    backend: BackendConfig = Field(default_factory=_answerer, description="LVLM answering (e.g. 3B)")
    rotations: int = Field(4, ge=1, description="Shuffled trials per question and condition (spec §1.4)")
    compat: Literal["fixed", "official"] = Field(
        "fixed",
        description="official: correct = letter is a substring of the output (spec §1.4); "
        "fixed: the extracted letter equals the answer",
    )
    evidence: Literal["media", "caption"] = Field(
        "media",
        description="What the visual answerer gets: the media, or a caption column (input.caption_column) "
        "as a cheap stand-in (text LLM / lexical curation)",
    )
    caption_column: str = Field("caption", description="Input column with captions for evidence=caption")

    @model_validator(mode="after")
    def _one_answer(self) -> AnswerConfig:
        if self.backend.sampling.n > 1:
            raise one_answer(
                "backend.sampling.n",
                self.backend.sampling.n,
                "the answer stage reads one answer per trial",
                "set it to 1; raise answer.rotations for more trials per question",
            )
        return self


class FilterConfig(ConfigModel):
    min_visual_acc: float = Field(0.75, ge=0, le=1, description="Keep when visual accuracy > this (strict; spec §1.5)")
    max_text_acc: float = Field(0.25, ge=0, le=1, description="Keep when text-only accuracy < this (strict)")
    max_per_item: int | None = Field(None, ge=1, description="Cap on kept questions per image/video")
    dedup: bool = Field(True, description="Drop repeated questions of an item (same stem and answer text)")


#: the input column a row's own training prompt is read from (``export.prompt_source: input``): the verl / CapRL
#: layout's ``prompt`` (CapRL-QA-75K, CapRL-Video-QA-20K)
INPUT_PROMPT = "prompt"


class ExportConfig(ConfigModel):
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of items (not questions) in the val split")
    embed_media: bool = Field(False, description="Store image bytes in the Parquet `image` column")
    prompt_source: Literal["input", "config"] = Field(
        "input",
        description="input: a row whose input carries its own training prompt (a `prompt` column: chat messages "
        "[{role, content}] or text, as CapRL-QA-75K and CapRL-Video-QA-20K publish the prompts CapRL was trained "
        "and evaluated with) keeps it, a row without one gets image_prompt / video_prompt; config: every row gets "
        "image_prompt / video_prompt. The funnel counts the rows of each (prompts)",
    )
    image_prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_image", description="Training prompt of image rows without their own (see prompt_source)"
    )
    video_prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "caprl_video_timestamped", description="Training prompt of video rows without their own (see prompt_source)"
    )
    image_data_source: str = Field("image_caption_rl", description="data_source of image rows (CapRL-QA-75K)")
    video_data_source: str = Field("video_caption_rl", description="data_source of video rows")


class CurateConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.curate.pipeline"
    volatile_fields: ClassVar[frozenset[str]] = JobConfig.volatile_fields | {"runner"}

    kind: Literal["curate"] = "curate"
    input: InputConfig
    import_mode: Literal["none", "text", "qa"] = Field(
        "none",
        description="none: generate MCQs; text: input.import_column holds generator-style QA text; "
        "qa: it holds QA lists ({question, choices, answer}, or JSON of them)",
    )
    import_column: str = Field(
        "qa",
        description="Input column used by import_mode; a dotted name reads inside a "
        "column (reward_model.ground_truth for CapRL-QA-75K / CapRL-Video-QA-20K)",
    )
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    answer: AnswerConfig = Field(default_factory=AnswerConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    sharding: ShardingConfig = Field(default_factory=lambda: ShardingConfig(shard_size=100))
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    seed: int = Field(0, description="Seeds option shuffles and sampling: reruns give identical outputs")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return refuse_moved_decode_keys(data)

    @model_validator(mode="after")
    def _carried_names(self) -> CurateConfig:
        from caprl_kit.schemas.curate import CuratedQARow

        clash = sorted(set(self.input.carry_columns) & set(CuratedQARow.model_fields))
        if clash:
            raise_issues(
                [
                    FieldIssue(
                        "input.carry_columns",
                        f"{clash} are columns caprl writes in every curated row",
                        "rename those input columns, or leave them out of carry_columns",
                    )
                ]
            )
        return self
