"""Config blocks of the generation layer: sampling and back-end settings (nested, one block per concern)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends import BACKENDS
from caprl_kit.backends.loading import DEVICE, DTYPES
from caprl_kit.config import ConfigModel, FieldIssue, registry_name, volatile
from caprl_kit.registry import suggest


def _dtype(name: str) -> str:
    if name not in DTYPES:
        close = suggest(name, list(DTYPES))
        raise ValueError(
            f"unknown dtype '{name}'"
            + (f"; did you mean '{close}'?" if close else "")
            + f" (use one of {', '.join(DTYPES)})"
        )
    return name


def _device(name: str) -> str:
    if not DEVICE.match(name):
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return name


class SamplingConfig(ConfigModel):
    n: int = Field(1, ge=1, description="Completions per request")
    temperature: float = Field(1.0, ge=0.0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass")
    top_k: int | None = Field(None, ge=1, description="Top-k cut-off; null disables it")
    max_tokens: int = Field(256, ge=1, description="Tokens generated per completion")
    stop: list[str] = Field(default_factory=list, description="Stop strings")
    seed: int | None = Field(None, description="Seed for reproducible sampling")
    repetition_penalty: float = Field(1.0, gt=0.0, description="1.0 disables it")


class VLLMOptions(ConfigModel):
    tensor_parallel_size: int = volatile(1, ge=1, description="GPUs per engine")
    gpu_memory_utilization: float = volatile(0.9, gt=0.0, le=1.0, description="On the CPU build: share of host RAM")
    max_model_len: int | None = Field(None, ge=16, description="Context length; null = the model's")
    limit_mm_per_prompt: dict[str, int] = Field(
        default_factory=lambda: {"image": 1, "video": 1}, description="Media items allowed per prompt"
    )
    enforce_eager: bool = volatile(False, description="Disable CUDA graphs (required on CPU)")
    max_num_seqs: int | None = volatile(None, ge=1, description="Scheduler batch limit")
    extra: dict[str, object] = Field(default_factory=dict, description="Further vllm.LLM keyword arguments")


class OpenAIOptions(ConfigModel):
    base_url: str = volatile("http://127.0.0.1:8000/v1", description="Server base URL ending in /v1")
    api_key_env: str = volatile("OPENAI_API_KEY", description="Environment variable holding the API key")
    served_model: str | None = volatile(None, description="Model name the server expects; default: backend.model")
    max_concurrency: int = volatile(16, ge=1, description="Requests in flight at once")
    timeout_s: float = volatile(600.0, gt=0, description="Per-request timeout")
    max_retries: int = volatile(5, ge=0, description="Retries on 429/5xx/timeouts (exponential backoff + jitter)")
    backoff_base_s: float = volatile(0.5, gt=0, description="First retry delay; doubles each retry")
    backoff_max_s: float = volatile(30.0, gt=0, description="Longest retry delay")
    video_as: Literal["frames", "jpeg_sequence", "url"] = Field(
        "frames",
        description="Videos as image frames, as one vLLM data:video/jpeg frame sequence, or as the source URL",
    )
    extra_body: dict[str, object] = Field(default_factory=dict, description="Extra JSON fields per request")
    image_format: Literal["jpeg", "png"] = Field(
        "jpeg",
        description="How an image decoded here travels: jpeg (quality 95: ~4 ms and ~0.3 MB per 1 MP photo) or png"
        " (lossless: ~0.4 s and ~1.3 MB, which caps one client at ~2 images/s)",
    )
    image_resize: Literal["client", "server"] = Field(
        "client",
        description="Who resizes images to the pixel budget: client (decoded, resized to media.min/max_pixels and"
        " encoded here) or server (the server's processor resizes, e.g. vllm serve --mm-processor-kwargs"
        " '{\"max_pixels\": ...}': an upright RGB/grayscale JPEG, PNG or WebP is sent as its own bytes, others as"
        " with client)",
    )


class BackendConfig(ConfigModel):
    name: Annotated[str, AfterValidator(registry_name(BACKENDS))] = Field(
        "transformers", description="transformers | vllm | openai | lexical"
    )
    model: str | None = Field(None, description="Hub id or local path (not used by lexical)")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model; off unless you trust it")
    dtype: Annotated[str, AfterValidator(_dtype)] = Field("auto", description="auto, float32, bfloat16 or float16")
    device: Annotated[str, AfterValidator(_device)] = volatile(
        "auto", description="auto, cpu, cuda or cuda:N (transformers)"
    )
    batch_size: int = volatile(
        8,
        ge=1,
        description="Requests per engine call (transformers, lexical); vllm is limited "
        "by vllm.max_num_seqs, openai by openai.max_concurrency",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)

    @model_validator(mode="after")
    def _batch_size_used(self) -> BackendConfig:
        limit = BATCH_LIMIT.get(self.name)
        if limit is not None and self.batch_size != BackendConfig.model_fields["batch_size"].default:
            key, why = limit
            raise FieldIssue(
                "batch_size",
                f"is ignored by the {self.name} back end: {why}",
                f"set {key} instead, or remove batch_size",
            )
        return self


#: back ends that stream requests without batch_size -> (the key that does limit them, how)
BATCH_LIMIT = {
    "vllm": (
        "vllm.max_num_seqs",
        (
            "vLLM's scheduler runs up to vllm.max_num_seqs sequences at once, vLLM's "
            "default when null, and the stream keeps twice that many requests in the engine"
        ),
    ),
    "openai": ("openai.max_concurrency", "openai.max_concurrency requests are in flight at once, whatever the batch"),
}


def one_answer(path: str, n: int, reader: str, instead: str) -> FieldIssue:
    """The refusal of a ``sampling.n`` above 1 where the caller reads only the first completion of each request."""
    return FieldIssue(
        path, f"is {n}, but {reader}: the other {n - 1} completion(s) would be generated and thrown away", instead
    )
