"""Config blocks for reading inputs and media, and for sharding, shared by curate, annotate and eval."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from caprl_kit.config import ConfigModel, FieldIssue, raise_issues, volatile

IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"]
VIDEO_EXTENSIONS = [".mp4", ".mkv", ".webm", ".mov", ".avi"]


def some_paths(value: str | list[str]) -> str | list[str]:
    """A path key's value: one path (a glob too) or a list of them; an empty list names nothing, a list of one is
    that path given alone."""
    if isinstance(value, list) and not value:
        raise ValueError("an empty list names nothing; give a path, a glob or a list of files")
    return value[0] if isinstance(value, list) and len(value) == 1 else value


#: a key that takes one path, a glob or a list of files (``io.readers.expand_paths`` reads it)
Paths = Annotated[str | list[str], AfterValidator(some_paths)]


class InputConfig(ConfigModel):
    path: Paths = Field(
        description="Folder, manifest (.jsonl/.csv/.parquet), HF dataset dir, or .tar shards; any fsspec URL. "
        "Several manifests or .tar shards: a glob (gen_qa's `gen_qa_out/part_*.jsonl`, matches read in sorted "
        "order) or a list of files (each may be a glob), read one after the other as one input"
    )
    format: Literal["auto", "folder", "jsonl", "csv", "parquet", "hf_dataset", "webdataset"] = Field(
        "auto", description="How to read `path`; auto picks by suffix / folder contents"
    )
    media_type: Literal["auto", "image", "video"] = Field("auto", description="auto decides per file by extension")
    key_column: str | None = Field(None, description="Manifest column with item ids (default: row path or index)")
    path_column: str = Field(
        "path",
        description="Manifest column with a path or fsspec URL (a list: its first entry, "
        "as CapRL-Video-QA-20K's `videos`)",
    )
    media_root: str | None = Field(
        None,
        description="Root that relative manifest paths resolve against (default: the "
        "manifest's folder), e.g. the LLaVA-Video-178K root for CapRL-Video-QA-20K",
    )
    bytes_column: str | None = Field(None, description="Manifest column with encoded media bytes")
    carry_columns: list[str] = Field(default_factory=list, description="User columns copied into the output rows")
    image_extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS), description="File suffixes read as images"
    )
    video_extensions: list[str] = Field(
        default_factory=lambda: list(VIDEO_EXTENSIONS), description="File suffixes read as videos"
    )
    limit: int | None = Field(None, ge=1, description="Process only the first N items")
    duplicate_keys: Literal["error", "keep_first", "suffix"] = volatile(
        "error",
        description="An item key seen before in the listing (keys name output rows and resume): `error` "
        "stops before anything is written, naming the first repeated keys; `keep_first` skips the repeats (a "
        "warning counts them); `suffix` renames them KEY#2, KEY#3, ... The check keeps every key in memory while "
        "listing: about 80 bytes plus the key's length per key (~120 MB per million 35-character keys). Volatile: "
        "its effect is on the listing, which the input fingerprint covers",
    )

    #: columns a command copies into the items where a row has them (not a key: curate's ``prompt``); unlike
    #: ``carry_columns``, a row without one is no error
    _carry_if_present: tuple[str, ...] = PrivateAttr(default=())

    @property
    def carry_if_present(self) -> tuple[str, ...]:
        return self._carry_if_present

    def with_carry_if_present(self, columns: list[str]) -> InputConfig:
        """A copy that also carries ``columns`` into the items of the rows that have them (a non-null value)."""
        copy = self.model_copy()
        copy._carry_if_present = tuple(dict.fromkeys([*self._carry_if_present, *columns]))
        return copy


class MediaConfig(ConfigModel):
    min_pixels: int = Field(3136, ge=1, description="Qwen-style lower bound on resized image area")
    max_pixels: int = Field(1003520, ge=1, description="Qwen-style upper bound on resized image area (1280*28*28)")
    max_image_pixels: int = Field(
        178_956_970, ge=1, description="Decompression-bomb guard: larger images are rejected before decoding"
    )
    max_file_bytes: int = Field(
        1 << 30,
        ge=1,
        description="Largest media file (or embedded bytes) read, in bytes; larger ones are `too_large` "
        "rows, checked before reading and enforced while reading",
    )
    url_connect_timeout_s: float = volatile(
        10.0,
        gt=0,
        description="http(s) media: longest wait for the connection (TCP + TLS); an item whose server "
        "does not connect in time is a `url_timeout` row",
    )
    url_read_timeout_s: float = volatile(
        60.0,
        gt=0,
        description="http(s) media: longest wait for the server's answer and then for each chunk of its "
        "body (a server that accepts and never answers: a `url_timeout` row after this long); the body is capped "
        "by `max_file_bytes` while streaming",
    )
    video_fps: float = Field(2.0, gt=0, description="Frames sampled per second of video")
    video_max_frames: int = Field(32, ge=1, description="Most frames sampled from one video")
    video_min_frames: int = Field(4, ge=1, description="Fewest frames sampled (short clips)")
    video_max_pixels: int = Field(200704, ge=1, description="Upper bound on area per video frame")
    video_decoder: Literal["auto", "sparse", "linear"] = volatile(
        "auto",
        description="How sampled frames are decoded: `sparse` seeks to the keyframe before each one, `linear` "
        "decodes every frame up to the last one, `auto` seeks where that decodes fewer frames (long videos); the "
        "frames and timestamps are the same, and a file where seeking cannot be relied on is decoded linearly",
    )
    video_keyframe_snap_s: float = Field(
        0.0,
        ge=0,
        description="Seconds a sampling instant may move to reach a keyframe: 0 takes the frame nearest each "
        "instant; above 0 an instant within this distance of a keyframe takes the keyframe (one frame decoded after "
        "a seek instead of its GOP up to the instant), never past half-way to the neighbouring instants or out of "
        "its window. Each frame keeps its own timestamp; a file without reliable timestamps is not snapped",
    )

    @model_validator(mode="after")
    def _ranges(self) -> MediaConfig:
        if self.min_pixels > self.max_pixels:
            raise FieldIssue(
                "min_pixels",
                f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})",
                "lower min_pixels or raise max_pixels",
            )
        if self.min_pixels > self.video_max_pixels:
            raise FieldIssue(
                "min_pixels",
                f"min_pixels ({self.min_pixels}) must be <= video_max_pixels ({self.video_max_pixels})",
                "lower min_pixels or raise video_max_pixels",
            )
        if self.video_min_frames > self.video_max_frames:
            raise FieldIssue(
                "video_min_frames",
                f"video_min_frames ({self.video_min_frames}) must be <= video_max_frames ({self.video_max_frames})",
                "lower one or raise the other",
            )
        return self


class DecodeConfig(ConfigModel):
    """How media is decoded ahead of the engine, for every stage that decodes (annotate, eval's and pairs' captioning,
    curate's generate and answer)."""

    workers: int = volatile(
        2,
        ge=0,
        description="Threads (or processes) per worker decoding, resizing and encoding media while the engine works "
        "(0: inline); a GPU engine on photos or videos wants more (docs/dataflow.md: cores per GPU)",
    )
    processes: bool = volatile(
        False,
        description="Decode in `workers` spawned processes instead of threads: for video when the engine's Python "
        "side keeps the GIL busy (docs/dataflow.md)",
    )
    ahead: int | None = volatile(
        None,
        ge=1,
        description="Most decoded items waiting for the engine per worker, bounding memory whatever the shard size; "
        "null: captioning takes batching.window or half the engine's requests in flight (up to 64), curate 64",
    )


#: keys that the decode block replaced, and where they are now
MOVED_TO_DECODE = {
    "batching.decode_workers": "decode.workers",
    "batching.decode_processes": "decode.processes",
    "runner.decode_workers": "decode.workers",
    "runner.decode_processes": "decode.processes",
    "runner.decode_ahead": "decode.ahead",
}


def refuse_moved_decode_keys(data: Any) -> Any:
    """A ``model_validator(mode="before")`` body: a key of ``MOVED_TO_DECODE`` is refused naming its new place."""
    if isinstance(data, dict):
        issues = [
            FieldIssue(old, "moved to the decode block", f"set {new} instead")
            for old, new in MOVED_TO_DECODE.items()
            if isinstance(data.get(old.split(".")[0]), dict) and old.split(".")[1] in data[old.split(".")[0]]
        ]
        raise_issues(issues)
    return data


class ShardingConfig(ConfigModel):
    shard_size: int = Field(1000, ge=1, description="Items per output shard (the unit of resume)")
