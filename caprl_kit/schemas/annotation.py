"""Annotation shard rows: one row per input item, captions or a failure status (spec §4)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.inputs import MediaType
from caprl_kit.schemas.layout import SHARD


class SamplingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(description="Captions sampled per item")
    temperature: float = Field(description="Sampling temperature")
    top_p: float = Field(description="Nucleus sampling mass")
    top_k: int | None = Field(None, description="Top-k cut-off, null when off")
    max_tokens: int = Field(description="Token limit per caption")
    seed: int | None = Field(None, description="Sampling seed")
    repetition_penalty: float = Field(description="Repetition penalty")


class CaptionQuality(BaseModel):
    """Best-of-n (``select``): every candidate's quality and the one kept."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(description="The weighted terms the quality is (e.g. 1.0 x qa_accuracy + 0.1 x length)")
    chosen: int = Field(description="Index in captions of the caption kept as caption")
    scores: list[float] = Field(description="Each candidate's weighted quality, in captions order")
    names: list[str] = Field(description="The term scores in terms, in order (qa_reward, length_reward, ...)")
    terms: list[list[float]] = Field(description="Each candidate's term scores, in names order")


class CaptionWindow(BaseModel):
    """One window of a video captioned in windows (``video_windows``)."""

    model_config = ConfigDict(extra="forbid")

    start_s: float = Field(description="Where the window starts in the video (seconds)")
    end_s: float = Field(description="Where it ends (seconds); the windows tile the video")
    captions: list[str] = Field(description="The window's n captions, timestamps from the window's start")
    n_frames: int = Field(description="Frames sampled in the window")
    completion_tokens: list[int] = Field(default_factory=list, description="Tokens of each of its captions")


class AnnotationRow(Artifact):
    schema_name = "annotation"
    schema_version = 2  # v2: quality (best-of-n)
    producer = "caprl annotate"
    consumer = "datasets.load_dataset('parquet'), polars, caprl eval"
    file_pattern = SHARD
    example = {
        "key": "img_0001",
        "source": "images/img_0001.jpg",
        "media_type": "image",
        "media_bytes": None,
        "caption": "A red car parked beside a tree.",
        "captions": ["A red car parked beside a tree."],
        "model": "internlm/CapRL-3B",
        "prompt_id": "caprl_image",
        "prompt": "Please describe this image in detail.",
        "sampling": {
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": None,
            "max_tokens": 2048,
            "seed": 0,
            "repetition_penalty": 1.0,
        },
        "prompt_tokens": 312,
        "completion_tokens": [9],
        "finish_reasons": ["stop"],
        "caption_flags": [[]],
        "caption_clean": None,
        "width": 640,
        "height": 480,
        "n_frames": None,
        "frame_timestamps": None,
        "latency_s": 0.84,
        "content_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "status": "ok",
        "error_message": None,
    }

    key: str = Field(description="Item id (unique within the run)")
    source: str | None = Field(None, description="Path or URL of the media; null for embedded bytes")
    media_type: MediaType = Field("image", description="image or video")
    media_bytes: bytes | None = Field(None, description="Encoded media, only when output.embed_media is on")
    caption: str | None = Field(
        None, description="First caption, or with select the best one (null when the item failed)"
    )
    captions: list[str] = Field(default_factory=list, description="All n captions")
    model: str = Field(description="Captioner model id or path")
    prompt_id: str = Field(description="Name of the prompt in the prompt registry")
    prompt: str = Field(description="Prompt text sent with the media")
    sampling: SamplingRecord = Field(description="Sampling parameters used")
    prompt_tokens: int | None = Field(None, description="Prompt tokens including visual tokens")
    completion_tokens: list[int] = Field(default_factory=list, description="Tokens of each caption")
    finish_reasons: list[str] = Field(default_factory=list, description="stop or length, per caption")
    caption_flags: list[list[str]] = Field(
        default_factory=list,
        description="Hygiene flags per caption: truncated, "
        "repetitive, boilerplate_opener, meta_ending, empty (caprl_kit/monitors.py)",
    )
    caption_clean: str | None = Field(
        None,
        description="The first caption without its boilerplate opener and closing "
        "meta remarks, when output.clean is on",
    )
    quality: CaptionQuality | None = Field(
        None, description="Best-of-n: every candidate's quality and the chosen index (null without select)"
    )
    windows: list[CaptionWindow] | None = Field(
        None,
        description="A video captioned in windows (video_windows): each window's span and captions; caption and "
        "captions then hold the merged caption(s) with absolute timestamps (null otherwise)",
    )
    width: int | None = Field(None, description="Width of the decoded image or frames")
    height: int | None = Field(None, description="Height of the decoded image or frames")
    n_frames: int | None = Field(None, description="Frames sampled from a video")
    frame_timestamps: list[float] | None = Field(None, description="Timestamps (s) of the sampled frames")
    latency_s: float | None = Field(None, description="Seconds spent generating this item's batch share")
    content_hash: str | None = Field(None, description="sha256 of the media bytes")
    status: str = Field(description="ok, or the failure kind (file_not_found, failed_to_decode, ...)")
    error_message: str | None = Field(None, description="Why the item failed, null when ok")
