"""Preference pairs from the CapRL QA reward (``caprl train pairs``): every sampled caption with its reward, and the
chosen/rejected pairs in TRL's DPO format."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.layout import PAIRS, PAIRS_SCORED_DIR, SHARD, pattern


class Message(BaseModel):
    """One chat message (a struct in Parquet, so ``datasets`` hands TRL ``{"role", "content"}`` dicts)."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="user or assistant")
    content: str = Field(description="The message text")


class ScoredCaptionRow(Artifact):
    schema_name = "scored_caption"
    producer = "caprl train pairs (score stage)"
    consumer = "caprl train pairs (pair selection), polars / datasets for analysis"
    file_pattern = pattern(PAIRS_SCORED_DIR, SHARD)
    example = {
        "row": 0,
        "id": "img_0001",
        "key": "img_0001",
        "images": ["/data/images/img_0001.jpg"],
        "caption_index": 0,
        "caption": "A red circle at the left.",
        "score": 0.667,
        "qa_reward": 0.667,
        "completion_tokens": 6,
        "finish_reason": "stop",
        "caption_flags": [],
        "status": "ok",
        "error_message": None,
    }

    row: int = Field(description="Row index in the QA file (pairs are chosen per row)")
    id: str = Field(description="Row id of the QA dataset (its `id` column, else the row index)")
    key: str = Field(description="Item key of the sampling run (OUTPUT/samples)")
    images: list[str] = Field(default_factory=list, description="Image path(s) of the row, as the DPO data needs them")
    caption_index: int = Field(description="Which of the n sampled captions (-1: the item has none)")
    caption: str | None = Field(None, description="The sampled caption; null when the item failed")
    score: float | None = Field(None, description="Total reward (reward.components, as in training)")
    qa_reward: float | None = Field(None, description="The QA-accuracy term")
    completion_tokens: int | None = Field(None, description="Caption tokens (the captioner's tokenizer)")
    finish_reason: str | None = Field(None, description="stop or length")
    caption_flags: list[str] = Field(default_factory=list, description="Caption hygiene flags (caprl_kit/monitors.py)")
    status: str = Field(
        description="ok, or why the caption has no score (the sampling item's failure kind, no_caption, reward_failed)"
    )
    error_message: str | None = Field(None, description="Why, when status is not ok")


class PreferencePairRow(Artifact):
    schema_name = "preference_pair"
    producer = "caprl train pairs"
    consumer = "caprl train (method: dpo), TRL DPOTrainer via datasets.load_dataset"
    file_pattern = PAIRS
    example = {
        "id": "img_0001",
        "images": ["/data/images/img_0001.jpg"],
        "prompt": [{"role": "user", "content": "Please describe this image in detail."}],
        "chosen": [{"role": "assistant", "content": "A red circle at the left and a blue square at the right."}],
        "rejected": [{"role": "assistant", "content": "A red circle."}],
        "chosen_score": 1.0,
        "rejected_score": 0.333,
        "margin": 0.667,
        "chosen_tokens": 13,
        "rejected_tokens": 4,
    }

    id: str = Field(description="Row id of the QA dataset")
    images: list[str] = Field(description="Image path(s); TRL's vision DPO collator loads them")
    prompt: list[Message] = Field(description="Conversational prompt (TRL: the image goes before the text)")
    chosen: list[Message] = Field(description="The higher-reward caption as an assistant message")
    rejected: list[Message] = Field(description="The lower-reward caption as an assistant message")
    chosen_score: float = Field(description="Reward of the chosen caption")
    rejected_score: float = Field(description="Reward of the rejected caption")
    margin: float = Field(description="chosen_score - rejected_score (>= pairs.min_margin)")
    chosen_tokens: int | None = Field(None, description="Tokens of the chosen caption")
    rejected_tokens: int | None = Field(None, description="Tokens of the rejected caption")
