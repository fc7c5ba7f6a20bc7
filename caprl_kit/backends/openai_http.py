"""Any OpenAI-compatible chat server (``vllm serve``, SGLang, LMDeploy, hosted APIs).

Async with bounded concurrency (``openai.max_concurrency`` requests in flight); images go as base64 data URLs,
made in the stage's decode workers (``image_wire``): with ``openai.image_resize: server`` a file the server reads as
it is (an upright RGB/grayscale JPEG, PNG or WebP) goes as its own bytes, any other image is decoded, resized to
the media pixel budget and encoded (``image_format``) here; videos as image frames (``video_as: frames``), as one vLLM ``data:video/jpeg`` frame sequence
(``jpeg_sequence``), or as the original URL (``url``). The API key is read from the environment variable named by
``openai.api_key_env``. 408/409/425/429, 5xx, timeouts and connection errors are retried with exponential backoff
and full jitter (a ``Retry-After`` header, in seconds or as an HTTP date, sets the wait instead, capped by
``openai.backoff_max_s``); any other 4xx becomes that request's error with the server's message, and the rest of the
batch proceeds.

HTTP is aiohttp: one session per stream (or ``generate`` call) on its event loop, whose keep-alive pool holds up to
``max_concurrency`` connections, each reused request after request; taking a connection from the pool and giving
it back cost the same however many there are. Each request's JSON body is serialized once, before its first
attempt (in ``stream``, on the caller's thread with the payload).

An assistant prefill is sent as a final assistant message with ``continue_final_message: true`` and
``add_generation_prompt: false`` (understood by vLLM and SGLang).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from caprl_kit import chat
from caprl_kit.backends.base import IDLE, BackendBase, Request, Response
from caprl_kit.backends.config import BackendConfig
from caprl_kit.errors import BackendError, MediaError
from caprl_kit.io.media import (
    EncodedImage,
    ImageWire,
    VideoClip,
    describe,
    encode_image,
    jpeg_base64,
    load_video,
    read_bytes,
    wire_image,
)
from caprl_kit.log import get_logger

log = get_logger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: seconds an idle pooled connection is kept: under the 5 s after which uvicorn (``vllm serve``, SGLang) closes an
#: idle one, so the client drops a connection before the server can close it under a request being sent
KEEPALIVE_S = 4.0


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def image_data_url(image: Any, fmt: str = "PNG", wire: ImageWire | None = None) -> str:
    """An image part's URL: an ``EncodedImage`` (made in a decode worker) as it is; pixels encoded as they are; a
    path, URL or bytes in the ``wire`` form (default: decoded, resized to the default pixel budget, encoded)."""
    if isinstance(image, EncodedImage):
        return image.url
    if hasattr(image, "mode"):
        return encode_image(image, fmt)
    made = wire_image(read_bytes(image), wire or ImageWire(fmt), source=describe(image)).encoded
    assert made is not None
    return made.url


class OpenAIBackend(BackendBase):
    name = "openai"

    def __init__(self, cfg: BackendConfig):
        super().__init__(cfg)
        import aiohttp  # noqa: F401  (fail early with a clear ImportError if missing)

        self.opts = cfg.openai
        self.url = self.opts.base_url.rstrip("/") + "/chat/completions"
        self.served_model = self.opts.served_model or cfg.model or "default"
        key = os.environ.get(self.opts.api_key_env)
        if key is not None and not key.strip():
            raise BackendError(
                f"openai.api_key_env names ${self.opts.api_key_env}, which is set but empty: export "
                f"{self.opts.api_key_env}=<key>, or unset it for a server that needs no key"
            )
        self.headers = {"Authorization": f"Bearer {key or 'EMPTY'}", "Content-Type": "application/json"}
        self.max_in_flight = 0  # measured: most requests that were in flight at once
        self.image_fmt = self.opts.image_format.upper()

    # ------------------------------------------------------------------ payloads
    @property
    def image_wire(self) -> ImageWire:
        frame_quality = {"frames": 95, "jpeg_sequence": 75}.get(self.opts.video_as)  # url: the source goes as it is
        return ImageWire(self.image_fmt, originals=self.opts.image_resize == "server", frame_quality=frame_quality)

    def _media_parts(self, part: chat.Part) -> list[chat.Part]:
        if part["type"] == "image":
            url = image_data_url(part["image"], self.image_fmt, self.image_wire)
            return [{"type": "image_url", "image_url": {"url": url}}]
        return self._video_parts(part["video"])

    def _video_parts(self, video: Any) -> list[dict[str, Any]]:
        mode = self.opts.video_as
        if mode == "url":
            if isinstance(video, VideoClip):
                raise MediaError("bad_request", video.source, "video_as=url needs a path or URL, not decoded frames")
            return [{"type": "video_url", "video_url": {"url": str(video)}}]
        clip = video if isinstance(video, VideoClip) else load_video(video)
        quality = self.image_wire.frame_quality or 95
        frames = clip.encoded_frames  # made in a decode worker, else here
        if frames is None:
            frames = [jpeg_base64(f, quality) for f in clip.frames]
        if mode == "frames":
            return [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{f}"}} for f in frames]
        return [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(frames)}}]

    def payload(self, request: Request) -> dict[str, Any]:
        s = self.sampling_of(request)
        messages = chat.map_media(request.messages, self._media_parts)
        body: dict[str, Any] = {
            "model": self.served_model,
            "messages": messages,
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if s.top_k is not None:
            body["top_k"] = s.top_k
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if request.prefill is not None:
            messages.append(chat.message("assistant", request.prefill))
            body.update(continue_final_message=True, add_generation_prompt=False)
        body.update(self.opts.extra_body)
        return body

    # ------------------------------------------------------------------ transport
    def encode(self, body: dict[str, Any]) -> bytes:
        """A request's JSON body as sent (once per request: every attempt sends these bytes)."""
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _session(self) -> Any:
        """A pooled keep-alive session on the running loop: up to ``max_concurrency`` connections, each reused."""
        import aiohttp

        ssl: Any = True
        if self.url.startswith("https:"):  # the CAs httpx trusts (certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR)
            import httpx

            ssl = httpx.create_ssl_context()
        connector = aiohttp.TCPConnector(
            limit=self.opts.max_concurrency, limit_per_host=0, ssl=ssl, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.opts.timeout_s, sock_read=self.opts.timeout_s)
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.headers, proxy=env_proxy(self.url)
        )

    async def _post(self, session: Any, data: bytes, sem: asyncio.Semaphore, state: dict[str, int]) -> Any:
        import aiohttp

        opts = self.opts
        for attempt in range(opts.max_retries + 1):
            status, wait = None, None
            async with sem:
                state["now"] += 1
                self.max_in_flight = max(self.max_in_flight, state["now"])
                try:
                    async with session.post(self.url, data=data) as resp:
                        status, raw, retry_after = resp.status, await resp.read(), resp.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = transport_error(exc, opts.timeout_s)
                finally:
                    state["now"] -= 1
            if status is not None:
                if status < 400:
                    return json.loads(raw)
                error = f"HTTP {status}: {_message(raw)}"
                if status not in RETRY_STATUS:
                    raise RequestFailed("bad_request" if status < 500 else "server_error", error)
                wait = retry_after_s(retry_after)
            if attempt == opts.max_retries:
                raise RequestFailed("retries_exhausted", f"gave up after {attempt + 1} attempt(s): {error}")
            delay = (
                min(wait, opts.backoff_max_s)
                if wait is not None
                else random.uniform(0, min(opts.backoff_max_s, opts.backoff_base_s * 2**attempt))
            )
            log.info("retrying %s in %.2fs (%s)", self.url, delay, error)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _one(
        self, session: Any, request: Request, sem: asyncio.Semaphore, state: dict[str, int], body: bytes | None = None
    ) -> Response:
        t0 = time.perf_counter()
        try:
            body = body if body is not None else self.encode(self.payload(request))
        except MediaError as exc:
            return Response.failed(exc.kind, str(exc), request.id)
        try:
            data = await self._post(session, body, sem, state)
        except RequestFailed as exc:
            return Response.failed(exc.kind, str(exc), request.id)
        choices = data.get("choices") or []
        usage = data.get("usage") or {}
        n = max(len(choices), 1)
        per_choice = int(usage.get("completion_tokens", 0)) // n  # servers report a total over the n choices
        return Response(
            texts=[(c.get("message") or {}).get("content") or "" for c in choices],
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=[per_choice] * len(choices),
            finish_reasons=[c.get("finish_reason") or "stop" for c in choices],
            latency_s=time.perf_counter() - t0,
            id=request.id,
        )

    async def agenerate(self, requests: Sequence[Request]) -> list[Response]:
        sem = asyncio.Semaphore(self.opts.max_concurrency)
        state = {"now": 0}
        async with self._session() as session:
            return list(await asyncio.gather(*(self._one(session, r, sem, state) for r in requests)))

    @property
    def in_flight(self) -> int:
        return self.opts.max_concurrency

    def stream(self, requests: Iterable[Request], **_: Any) -> Iterator[Response]:
        """One concurrency limit across the whole stream: a request is sent as soon as one of the
        ``max_concurrency`` slots frees, whatever batch or shard it belongs to, so the server never waits for the
        slowest request of a batch. Payloads (image encoding) are built here, on the caller's thread, while the
        event loop thread only does HTTP; retries as in ``generate``."""
        limit = self.opts.max_concurrency
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="caprl-openai", daemon=True)
        thread.start()
        done: queue.Queue[Response] = queue.Queue()
        state = {"now": 0}

        async def setup() -> tuple[Any, asyncio.Semaphore]:
            return self._session(), asyncio.Semaphore(limit)

        session, sem = asyncio.run_coroutine_threadsafe(setup(), loop).result()

        running: set[Any] = set()

        def finished(request: Request, fut: Any) -> None:
            running.discard(fut)
            if fut.cancelled():
                return
            try:
                done.put(fut.result())
            except BaseException as exc:  # noqa: BLE001 - a bug in one request must not hang the stream
                done.put(Response.failed("generation_failed", f"{type(exc).__name__}: {exc}", request.id))

        in_flight = 0
        try:
            for request in requests:
                if request is IDLE:  # a live feed with nothing new: hand back what finishes within a moment
                    try:
                        first = done.get(timeout=0.01)
                    except queue.Empty:
                        continue
                    in_flight -= 1
                    yield first
                while in_flight >= limit or not done.empty():
                    yield _next(done)
                    in_flight -= 1
                if request is IDLE:
                    continue
                try:
                    body = self.encode(self.payload(request))
                except MediaError as exc:
                    yield Response.failed(exc.kind, str(exc), request.id)
                    continue
                fut = asyncio.run_coroutine_threadsafe(self._one(session, request, sem, state, body), loop)
                running.add(fut)
                fut.add_done_callback(functools.partial(finished, request))
                in_flight += 1
            while in_flight:
                yield _next(done)
                in_flight -= 1
        finally:  # also on Ctrl-C or when the consumer stops early: cancel what is still running, then close
            for fut in list(running):  # a cancelled future's callback removes it from ``running``
                fut.cancel()
            try:
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
                if not thread.is_alive():
                    loop.close()

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        # called from inside an event loop (e.g. a server): run on a helper thread with its own loop
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.update(out=asyncio.run(self.agenerate(requests))))
        thread.start()
        thread.join()
        return box["out"]


def _next(done: queue.Queue[Response]) -> Response:
    """The next finished response, waiting in short steps so that Ctrl-C is handled at once (see io/decode.py)."""
    while True:
        try:
            return done.get(timeout=0.1)
        except queue.Empty:
            continue


def _message(raw: bytes) -> str:
    """The server's error message in a failed answer's body."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:300]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    if not isinstance(data, dict):
        return str(data)[:300]
    return str(err or data.get("detail") or data.get("message") or data)[:300]


def retry_after_s(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (it gives seconds or an HTTP date); None without one."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def transport_error(exc: BaseException, timeout_s: float) -> str:
    """A failed exchange in httpx's words (ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError), so errors
    and logs read as they did before aiohttp."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        name = "ConnectError"
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        name = "ConnectTimeout"
    elif isinstance(exc, aiohttp.SocketTimeoutError):
        name = "ReadTimeout"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        name = "RemoteProtocolError"
    else:
        name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        return f"{name}: no answer within {timeout_s:g} s"
    return f"{name}: {exc}"


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` ($HTTP_PROXY / $HTTPS_PROXY / $ALL_PROXY unless $NO_PROXY
    matches, as httpx honoured them), resolved once per session rather than per request."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
