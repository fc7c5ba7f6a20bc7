"""Curation artifacts (spec §1): raw MCQ generations, parsed MCQ sets, answer trials, curated QA rows."""

from __future__ import annotations

import builtins

from pydantic import BaseModel, ConfigDict, Field

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.inputs import MediaType
from caprl_kit.schemas.layout import AUDIT, CURATE_STAGE_DIR, CURATED_SPLIT, SHARD, pattern


class MCQ(BaseModel):
    """A canonical multiple-choice question. ``choices`` carry their label: ``"A) text"`` (spec §1.7)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="Question stem without options")
    choices: list[str] = Field(description="Labelled options in display order, e.g. 'A) red'")
    answer: str = Field(description="Letter of the correct option")


class MediaLocator(BaseModel):
    """Where the input embeds an item's bytes (``io/locators.Locator``), read by the worker that needs them."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="tar, parquet or hf_dataset")
    url: str = Field(description="The tar / Parquet file or the HF dataset folder")
    offset: int = Field(description="The tar member's data offset, else the row in the file / dataset")
    size: int | None = Field(None, description="Bytes, where the listing knows it without reading them")
    column: str | None = Field(None, description="The column holding the bytes")
    field: str | None = Field(None, description="The field inside a struct column (e.g. bytes of an HF Image)")


class MCQGenerationRow(Artifact):
    schema_name = "mcq_generation"
    schema_version = 2  # v2: media_locator is a struct (v1: JSON text)
    producer = "caprl curate (generate stage)"
    consumer = "caprl curate (parse stage)"
    file_pattern = pattern(CURATE_STAGE_DIR.format(stage="generate"), SHARD)
    example = {
        "key": "img_0001",
        "source": "images/img_0001.jpg",
        "media_type": "image",
        "model": "Qwen/Qwen2.5-VL-72B-Instruct",
        "raw_text": "#### 1. **What colour is the car?**\n   - A) Red\n   - B) Blue\n**Answer:** A) Red\n------",
        "completion_tokens": 42,
        "finish_reason": "stop",
        "status": "ok",
        "error_message": None,
    }

    key: str = Field(description="Item id from the input manifest")
    source: str | None = Field(None, description="Path or URL of the media")
    media_type: MediaType = Field("image", description="image or video")
    model: str = Field(description="Generator model id or path")
    raw_text: str | None = Field(None, description="The generator's raw output (null when generation failed)")
    completion_tokens: int | None = Field(None, description="Generated tokens")
    finish_reason: str | None = Field(None, description="stop, length, or error")
    status: str = Field(description="ok, or the failure kind (e.g. failed_to_decode)")
    error_message: str | None = Field(None, description="Why the row failed, null when ok")
    media_bytes: bytes | None = Field(
        None,
        description="The item's bytes when the input embeds them (no source "
        "path, e.g. a compressed WebDataset tar): later stages read them here",
    )
    media_locator: MediaLocator | None = Field(
        None, description="Where the input embeds the item's bytes, read by the worker that needs them"
    )
    carry: str | None = Field(
        None,
        description="JSON of the input columns the later stages use (import / caption "
        "columns), so the input is listed once",
    )


class RejectedQuestion(BaseModel):
    """A question the parse stage dropped: a block the parser could not use or an MCQ the strict validator refused."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Block number in the raw text, or index in the imported QA list (0-based)")
    kind: str = Field(description="Stable reason, e.g. no_options, duplicate, answer_not_a_label, empty_question")
    reason: str = Field(description="Human-readable reason naming the item key and the question index")


class MCQSetRow(Artifact):
    schema_name = "mcq_set"
    producer = "caprl curate (parse stage)"
    consumer = "caprl curate (answer stages)"
    file_pattern = pattern(CURATE_STAGE_DIR.format(stage="parse"), SHARD)
    example = {
        "key": "img_0001",
        "source": "images/img_0001.jpg",
        "media_type": "image",
        "questions": [{"question": "What colour is the car?", "choices": ["A) Red", "B) Blue"], "answer": "A"}],
        "n_blocks": 2,
        "n_dropped": 1,
        "rejected": [
            {
                "index": 1,
                "kind": "answer_not_a_label",
                "reason": "img_0001 question 1: answer 'E' is not one of the labels A, B",
            }
        ],
        "status": "ok",
        "error_message": None,
    }

    key: str = Field(description="Item id")
    source: str | None = Field(None, description="Path or URL of the media")
    media_type: MediaType = Field("image", description="image or video")
    questions: list[MCQ] = Field(description="Parsed, deduplicated questions")
    n_blocks: int = Field(description="Question blocks found in the raw text")
    n_dropped: int = Field(description="Blocks dropped as unparseable, invalid or duplicate")
    rejected: list[RejectedQuestion] = Field(default_factory=list, description="Each dropped block with its reason")
    status: str = Field(description="ok, no_questions, or the upstream failure kind")
    error_message: str | None = Field(None, description="Why nothing was parsed, null when ok")


class Trial(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rotation: int = Field(description="Rotation index (0..rotations-1)")
    choices: list[str] = Field(description="Shuffled, relabelled options shown to the answerer")
    answer: str = Field(description="Correct letter after the shuffle")
    response: str | None = Field(None, description="The answerer's raw output")
    predicted: str | None = Field(None, description="Letter extracted from the response")
    correct: bool = Field(description="Whether the prediction matched")


class QATrialsRow(Artifact):
    schema_name = "qa_trials"
    producer = "caprl curate (answer + filter stages)"
    consumer = "caprl curate (export stage), audit table"
    file_pattern = f"{pattern(CURATE_STAGE_DIR.format(stage='answer'), SHARD)}, {AUDIT}"
    example = {
        "key": "img_0001",
        "qa_index": 0,
        "mcq": {"question": "What colour is the car?", "choices": ["A) Red", "B) Blue"], "answer": "A"},
        "visual_trials": [
            {
                "rotation": 0,
                "choices": ["A) Blue", "B) Red", "C) None of the above"],
                "answer": "B",
                "response": "B",
                "predicted": "B",
                "correct": True,
            }
        ],
        "text_trials": [
            {
                "rotation": 0,
                "choices": ["A) Blue", "B) Red"],
                "answer": "B",
                "response": "A",
                "predicted": "A",
                "correct": False,
            }
        ],
        "visual_acc": 1.0,
        "text_acc": 0.0,
        "keep": True,
        "reason": "kept",
    }

    key: str = Field(description="Item id")
    qa_index: int = Field(description="Index of the question within the item's MCQ set")
    mcq: MCQ = Field(description="The question as parsed")
    visual_trials: list[Trial] = Field(description="Answers with the media shown")
    text_trials: list[Trial] = Field(description="Answers from the question text alone")
    visual_acc: float = Field(description="Share of correct visual trials")
    text_acc: float = Field(description="Share of correct text-only trials")
    keep: bool = Field(description="Whether the question passed every filter")
    reason: str = Field(description="kept, or why it was dropped (visual_acc_low, text_acc_high, duplicate, cap)")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="user, assistant or system")
    content: str = Field(description="Text with <image>/<video> placeholders")


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: builtins.bytes | None = Field(None, description="Encoded image bytes (HF datasets Image layout)")
    path: str | None = Field(None, description="Image path when bytes are not embedded")


class RewardModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: str = Field("rule", description="Free text; verl ignores it")
    ground_truth: list[MCQ] = Field(description="The kept questions of this item")


class CuratedExtraInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Row index within its split")
    split: str = Field(description="train or val")
    key: str = Field(description="Item id in the input manifest")
    source: str | None = Field(None, description="Original media path or URL")
    generator: str | None = Field(None, description="Model that wrote the questions")
    answerer: str | None = Field(None, description="Model that answered them in the filter")


class CuratedQARow(Artifact):
    schema_name = "curated_qa"
    producer = "caprl curate (export stage)"
    consumer = "caprl train (TRL and verl's RLHFDataset), caprl eval"
    file_pattern = CURATED_SPLIT.format(split="{train,val}")
    example = {
        "id": "3f2a9c",
        "image": {"bytes": None, "path": "images/img_0001.jpg"},
        "images": ["images/img_0001.jpg"],
        "videos": None,
        "prompt": [{"role": "user", "content": "<image> Please describe this image in detail."}],
        "data_source": "image_caption_rl",
        "ability": "caption",
        "reward_model": {
            "style": "rule",
            "ground_truth": [{"question": "What colour is the car?", "choices": ["A) Red", "B) Blue"], "answer": "A"}],
        },
        "extra_info": {
            "index": 0,
            "split": "train",
            "key": "img_0001",
            "source": "images/img_0001.jpg",
            "generator": "Qwen/Qwen2.5-VL-72B-Instruct",
            "answerer": "Qwen/Qwen2.5-VL-3B-Instruct",
        },
    }

    id: str = Field(description="Hex id of the item (CapRL-QA-75K layout)")
    image: ImageRef | None = Field(None, description="CapRL-QA-75K image column: {bytes, path}")
    images: list[str] | None = Field(None, description="verl image_key column: one path per <image>")
    videos: list[str] | None = Field(None, description="verl video_key column: one path per <video>")
    prompt: list[ChatMessage] = Field(description="Chat messages with the media placeholder")
    data_source: str = Field(description="image_caption_rl or video_caption_rl")
    ability: str = Field("caption", description="Passed through by verl")
    reward_model: RewardModelSpec = Field(description="verl reward_model column")
    extra_info: CuratedExtraInfo = Field(description="Provenance; handed to compute_score by verl")
