"""The generation contract every back end implements: a batch of ``Request`` in, one ``Response`` each out.

A request is chat messages (``caprl_kit/chat.py``: content a string or typed text / image / video parts)
plus sampling parameters and an optional assistant *prefill* (the CapRL answerer prompt ends the assistant turn
with "The answer is"; generation continues it). A bad input never raises out of ``generate``: its response carries
``error`` and the rest of the batch proceeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from caprl_kit import chat
from caprl_kit.backends.config import BackendConfig, SamplingConfig

if TYPE_CHECKING:
    from caprl_kit.io.media import ImageWire


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0

    @classmethod
    def from_config(cls, cfg: SamplingConfig) -> SamplingParams:
        return cls(**{**cfg.model_dump(), "stop": tuple(cfg.stop)})

    def with_(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)


@dataclass
class Request:
    messages: list[dict[str, Any]]
    sampling: SamplingParams | None = None  # None: the back end's configured sampling
    prefill: str | None = None
    id: str | None = None
    #: batch-wise engines never batch requests of different groups together (the streaming engine sets the shard):
    #: a batch's composition, hence a seeded sample, does not depend on where a run started or resumed
    group: Any = None

    @classmethod
    def user(
        cls,
        text: str,
        *,
        images: Sequence[Any] = (),
        videos: Sequence[Any] = (),
        system: str | None = None,
        prefill: str | None = None,
        sampling: SamplingParams | None = None,
        id: str | None = None,
    ) -> Request:
        """One user turn: media first, then the text (Qwen-VL's order)."""
        messages = chat.user_turn(text, images=images, videos=videos, system=system)
        return cls(messages=messages, sampling=sampling, prefill=prefill, id=id)

    def media(self, kind: str) -> list[Any]:
        return chat.media_of(self.messages, kind)


@dataclass
class Response:
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str | None:
        return self.texts[0] if self.texts else None

    @classmethod
    def failed(cls, kind: str, message: str, id: str | None = None) -> Response:
        return cls(error=message, error_kind=kind, id=id)


def estimate_tokens(request: Request) -> int:
    """Rough prompt tokens of a request (text + Qwen-VL visual tokens: one per 28x28 patch, video frames paired),
    for batching by size."""
    text = sum(
        len(m["content"]) // 4
        if isinstance(m["content"], str)
        else sum(len(p.get("text", "")) // 4 for p in m["content"])
        for m in request.messages
    )
    visual = 0
    for im in request.media("image"):
        visual += (getattr(im, "width", 448) // 28) * (getattr(im, "height", 448) // 28)
    for clip in request.media("video"):
        frames = len(getattr(clip, "frames", ())) or 16
        visual += (frames // 2) * (getattr(clip, "width", 448) // 28) * (getattr(clip, "height", 448) // 28)
    return text + visual


#: failure kinds that say the engine itself failed (server down, every retry used, an engine step that failed as a
#: whole), not that a request was bad
ENGINE_DOWN_KINDS = frozenset({"retries_exhausted", "server_error", "engine_error"})


#: row statuses that a rerun may cure (``--retry-failed``): engine-level failures (in runs made before they stopped
#: the run) and a generation that failed for one request (a server's garbled answer, an out-of-memory batch)
RETRYABLE_KINDS = ENGINE_DOWN_KINDS | {"generation_failed"}


def engine_failed(resp: Response) -> bool:
    """A response that failed for an engine-level reason: never a row, its shard is redone (runners/stream.py)."""
    return not resp.ok and resp.error_kind in ENGINE_DOWN_KINDS


class _Idle:
    group = None

    def __repr__(self) -> str:
        return "IDLE"


#: yielded by a live request source (``runners/stream.ShardStream`` over a ``ShardFeed``) that has no request right now while some of its requests are still
#: inside the engine: ``stream`` steps the engine / delivers finished responses and asks again, instead of waiting
IDLE: Any = _Idle()


class Backend(Protocol):
    """``generate`` answers a list; ``stream`` takes any number of requests and yields each response as it completes
    (matched by ``Response.id``), keeping up to ``in_flight`` requests inside the engine. Implementations:
    transformers, vllm, openai, lexical."""

    name: str
    model_id: str

    @property
    def image_wire(self) -> ImageWire | None: ...

    def generate(self, requests: Sequence[Request]) -> list[Response]: ...

    def stream(self, requests: Iterable[Request]) -> Iterator[Response]: ...

    def close(self) -> None: ...


class BackendBase:
    """Shared plumbing: config, default sampling, streaming in batches."""

    name = "base"

    def __init__(self, cfg: BackendConfig):
        self.cfg = cfg
        self.model_id = cfg.model or cfg.name
        self.default_sampling = SamplingParams.from_config(cfg.sampling)

    def sampling_of(self, request: Request) -> SamplingParams:
        return request.sampling or self.default_sampling

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        raise NotImplementedError

    @property
    def image_wire(self) -> ImageWire | None:
        """How this back end takes images over the wire, built in the decode workers (``io.media.wire_image``);
        None: it takes pixels (an engine in this process)."""
        return None

    @property
    def in_flight(self) -> int:
        """Requests ``stream`` keeps inside the engine: compute-bound engines (transformers, lexical) take batches
        of ``batch_size``; vllm and openai override it."""
        return self.cfg.batch_size

    def stream(
        self, requests: Iterable[Request], *, window: int | None = None, max_batch_tokens: int | None = None, **_: Any
    ) -> Iterator[Response]:
        """Responses as they complete, each with its request's id. Here, for engines whose step cost grows with the
        batch (transformers, lexical): token-budgeted batches of at most ``in_flight`` requests, cut from windows of
        ``window`` requests sorted by estimated prompt tokens (little padding), never mixing request groups (shards);
        memory stays per window. A live source that has nothing more right now (``IDLE``) cuts the window there,
        so a server's requests never wait for a full window."""
        size = self.in_flight
        limit = max(size, window or size)
        it = iter(requests)
        ahead = next(it, None)
        while ahead is not None:
            chunk: list[Request] = []
            while (
                ahead is not None
                and ahead is not IDLE
                and len(chunk) < limit
                and (not chunk or ahead.group == chunk[0].group)
            ):
                chunk.append(ahead)
                ahead = next(it, None)
            if chunk:
                yield from self._window(chunk, size, max_batch_tokens)
            elif ahead is IDLE:  # nothing here to step: wait a moment before asking again, never spin
                time.sleep(0.005)
            if ahead is IDLE:
                ahead = next(it, None)

    def _window(self, chunk: list[Request], size: int, max_batch_tokens: int | None) -> Iterator[Response]:
        from caprl_kit.io.batching import batches_by_cost

        costs = [estimate_tokens(r) for r in chunk]
        for batch in batches_by_cost(costs, size, max_batch_tokens or 1 << 30):
            todo = [chunk[i] for i in batch]
            for i in batch:
                chunk[i] = None  # type: ignore[call-overload]  # answered requests free their media at once
            responses = self.generate(todo)
            ids = [req.id for req in todo]
            del todo
            for rid, resp in zip(ids, responses):
                resp.id = rid
                yield resp

    def close(self) -> None:
        pass

    def __enter__(self) -> BackendBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, stopped)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
