"""``caprl serve-reward``: the CapRL reward as an HTTP service (FastAPI + uvicorn).

- ``POST /get_reward`` takes and answers the **official** bodies (spec §2.6), so the official verl/OpenRLHF recipes
  can point at it unchanged: ``{"prompts": [[caption, [[question_full, answer_letter], ...]], ...], "query": [],
  "labels": [], "score_mode"?}`` -> ``{"rewards", "qa_rewards", "format_rewards" (video)}``.
- ``POST /v1/reward``: our typed endpoint, ``{"captions": [...], "ground_truth": [[{question, choices, answer}]]}``
  -> ``{"rewards": [...], "details": [...]}``.
- ``GET /health``, ``GET /metrics`` (Prometheus text: requests by endpoint/code, latency, batch sizes, engine
  errors).

Every request is validated on its own before it is queued: shapes, captions as strings, non-empty QA lists and
every MCQ through the strict validator (``caprl_kit.mcq.validate``; an answer given as option text maps to its
label). Concurrent valid requests are then coalesced into one engine call (up to ``max_batch_captions`` captions,
waiting at most ``batch_wait_ms``); if that call fails, each request of the batch is retried on its own, so one
request's failure never fails the others. Bad JSON -> 400, body too large -> 413, wrong shape, empty QA list or
invalid MCQ -> 422 naming the offending index, missing/wrong token -> 401, engine failure -> 503 with the message:
never the silent zero rewards of the official server.
"""


import asyncio
from collections import deque
import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError

from caprl_kit.config import ConfigModel, JobConfig
from caprl_kit.errors import InvalidMCQ
from caprl_kit.log import get_logger
from caprl_kit.mcq.options import split_question_full
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.rewards.base import RewardOutput
from caprl_kit.rewards.config import QARewardConfig, TimestampFormatConfig
from caprl_kit.schemas.curate import MCQ
from caprl_kit.schemas.reward import RewardRequest

log = get_logger(__name__)


class RewardServerConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.rewards.server"

    kind: Literal["serve_reward"] = "serve_reward"
    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(18889, ge=0, le=65535, description="Port (CapRL++ scripts use 18889)")
    token_env: str | None = Field(None, description="Env var holding a bearer token; unset = no auth")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Larger requests get 413")
    max_batch_captions: int = Field(256, ge=1, description="Captions scored per engine call")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long to wait for more requests to batch")
    qa: QARewardConfig = Field(default_factory=QARewardConfig, description="QA reward and its answerer engine")
    format_weight: float | None = Field(
        None, description="Weight of the timestamp-format term; default 0.2 for video, 0 for image (spec §2.4)")
    timestamp_format: TimestampFormatConfig = Field(default_factory=TimestampFormatConfig)


class TypedRewardRequest(BaseModel):
    """``POST /v1/reward`` body. The items are checked one by one (:func:`typed_to_mcqs`) so errors name their index."""

    captions: list[Any]
    ground_truth: list[Any]


class EngineFailure(Exception):
    pass


# --------------------------------------------------------------------------- scoring core


class Scorer:
    """Wraps QA accuracy (+ format for video) behind a micro-batcher; one engine call at a time."""

    def __init__(self, cfg: RewardServerConfig, engine: Any = None):
        from caprl_kit.rewards.qa import QAScorer
        from caprl_kit.rewards.timestamp_format import TimestampFormatReward

        self.cfg = cfg
        self.qa = QAScorer(cfg.qa, engine)
        self.fmt = TimestampFormatReward(cfg.timestamp_format)
        weight = cfg.format_weight if cfg.format_weight is not None else (0.2 if cfg.qa.task == "video" else 0.0)
        self.format_weight = 0.0 if cfg.qa.task == "image" else weight
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caprl-reward-engine")
        self.queue: asyncio.Queue | None = None
        self.batch_sizes: list[int] = []  # drained into the metrics histogram
        self.scored_batches: deque[int] = deque(maxlen=10_000)  # recent engine calls' caption counts

    def score_now(self, captions: list[str], qa_lists: list[list[MCQ]]) -> dict[str, list[float]]:
        out: RewardOutput = self.qa.score(captions, qa_lists)
        result = {"qa_rewards": out.scores}
        if self.cfg.qa.task == "video":
            fmt = self.fmt.compute(captions).scores
            result["format_rewards"] = fmt
            result["rewards"] = [q + self.format_weight * f for q, f in zip(out.scores, fmt)]
        else:
            result["rewards"] = list(out.scores)
        return result

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())  # keep a reference: tasks are weakly held

    async def submit(self, captions: list[str], qa_lists: list[list[MCQ]]) -> dict[str, list[float]]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((captions, qa_lists, fut))  # type: ignore[union-attr]
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()  # type: ignore[union-attr]
            batch = [first]
            n = len(first[0])
            deadline = loop.time() + self.cfg.batch_wait_ms / 1000
            while n < self.cfg.max_batch_captions:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)  # type: ignore[union-attr]
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                n += len(item[0])
            await self._score_batch(batch)

    async def _run(self, captions: list[str], qa_lists: list[list[MCQ]]) -> dict[str, list[float]]:
        self.batch_sizes.append(len(captions))
        self.scored_batches.append(len(captions))
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.score_now, captions, qa_lists)

    async def _score_batch(self, batch: list[tuple[list[str], list[list[MCQ]], asyncio.Future]]) -> None:
        """One engine call for the whole batch; if it fails, each request is retried on its own, so one request's
        failure answers only that request with a 503 and the others still get their rewards."""
        captions = [c for item in batch for c in item[0]]
        qa_lists = [q for item in batch for q in item[1]]
        try:
            result = await self._run(captions, qa_lists)
        except Exception as exc:  # engine failure
            if len(batch) == 1:
                _settle(batch[0][2], exc=exc)
                return
            log.warning("reward engine failed on a batch of %d requests (%s: %s); retrying each on its own",
                        len(batch), type(exc).__name__, exc)
            for caps, qas, fut in batch:
                if fut.done():  # the client went away
                    continue
                try:
                    _settle(fut, await self._run(caps, qas))
                except Exception as one:
                    _settle(fut, exc=one)
            return
        start = 0
        for caps, _, fut in batch:
            _settle(fut, {k: v[start : start + len(caps)] for k, v in result.items()})
            start += len(caps)


def _settle(fut: asyncio.Future, result: dict[str, list[float]] | None = None, exc: Exception | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        log.warning("reward engine failed for a request: %s: %s", type(exc).__name__, exc)
        fut.set_exception(EngineFailure(f"{type(exc).__name__}: {exc}"))
    else:
        fut.set_result(result)


def _qa_list(value: Any, where: str, shape: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of {shape}")
    if not value:
        raise ValueError(f"{where}: empty QA list (nothing to score the caption against)")
    return value


def typed_to_mcqs(body: TypedRewardRequest) -> tuple[list[str], list[list[MCQ]]]:
    """Typed body -> (captions, QA lists), every MCQ through the strict validator. Raises ValueError or InvalidMCQ
    naming the offending index (``ground_truth[1][0]: answer 'E' is not one of the labels A, B``)."""
    if len(body.captions) != len(body.ground_truth):
        raise ValueError("captions and ground_truth must have the same length")
    captions, qa_lists = [], []
    for i, (caption, gt) in enumerate(zip(body.captions, body.ground_truth)):
        if not isinstance(caption, str):
            raise ValueError(f"captions[{i}] must be a string, got {type(caption).__name__}")
        qas = _qa_list(gt, f"ground_truth[{i}]", "{question, choices, answer} objects")
        captions.append(caption)
        qa_lists.append([validate_mcq(q, f"ground_truth[{i}][{j}]") for j, q in enumerate(qas)])
    return captions, qa_lists


def official_to_mcqs(prompts: list[list[Any]]) -> tuple[list[str], list[list[MCQ]]]:
    """Official ``prompts`` -> (captions, QA lists), every MCQ through the strict validator (an answer given as
    option text maps to its label). Raises ValueError or InvalidMCQ naming the offending index
    (``prompts[1].qa[0]: answer 'E' is not one of the labels A, B``)."""
    captions, qa_lists = [], []
    for i, entry in enumerate(prompts):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise ValueError(f"prompts[{i}] must be [caption, [[question_full, answer_letter], ...]]")
        caption, raw = entry
        if not isinstance(caption, str):
            raise ValueError(f"prompts[{i}] caption must be a string, got {type(caption).__name__}")
        qas = []
        for j, qa in enumerate(_qa_list(raw, f"prompts[{i}].qa", "[question_full, answer_letter] pairs")):
            where = f"prompts[{i}].qa[{j}]"
            if not (isinstance(qa, (list, tuple)) and len(qa) == 2 and all(isinstance(x, str) for x in qa)):
                raise ValueError(f"{where} must be [question_full, answer_letter]")
            mcq = split_question_full(qa[0])
            if mcq is None:
                raise ValueError(f"{where}: no '- A) ...' option lines in question_full")
            qas.append(validate_mcq({"question": mcq.question, "choices": mcq.choices, "answer": qa[1]}, where))
        captions.append(caption)
        qa_lists.append(qas)
    return captions, qa_lists


# --------------------------------------------------------------------------- the app


def create_app(cfg: RewardServerConfig, engine: Any = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    if cfg.token_env and not (token or "").strip():  # checked before the answerer loads
        from caprl_kit.errors import ConfigError, ConfigIssue

        state = "empty" if token is not None else "unset"
        raise ConfigError([ConfigIssue("token_env", f"names ${cfg.token_env}, which is {state}",
                                       f"export {cfg.token_env}=<token>, or drop token_env to serve without auth")])
    scorer = Scorer(cfg, engine)
    registry = CollectorRegistry()
    requests_total = Counter("caprl_reward_requests", "Requests by endpoint and status", ["endpoint", "code"],
                             registry=registry)
    latency = Histogram("caprl_reward_latency_seconds", "Request latency", ["endpoint"], registry=registry)
    batch_size = Histogram("caprl_reward_batch_captions", "Captions per engine call", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
    engine_errors = Counter("caprl_reward_engine_errors", "Engine failures", registry=registry)
    captions_total = Counter("caprl_reward_captions", "Captions scored", registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        await scorer.start()
        yield

    app = FastAPI(title="caprl reward server", lifespan=lifespan)

    def reply(endpoint: str, code: int, body: dict[str, Any], t0: float) -> JSONResponse:
        requests_total.labels(endpoint, str(code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        return JSONResponse(body, status_code=code)

    async def guarded(request: Request, endpoint: str) -> tuple[Any, JSONResponse | None]:
        t0 = time.perf_counter()
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            return None, reply(endpoint, 401, {"error": "missing or wrong bearer token"}, t0)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            return None, reply(endpoint, 413, {"error": f"body over {cfg.max_body_bytes} bytes"}, t0)
        raw = await request.body()
        if len(raw) > cfg.max_body_bytes:
            return None, reply(endpoint, 413, {"error": f"body over {cfg.max_body_bytes} bytes"}, t0)
        try:
            return json.loads(raw), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return None, reply(endpoint, 400, {"error": f"body is not valid JSON: {exc}"}, t0)

    async def score(endpoint: str, captions: list[str], qa_lists: list[list[MCQ]], t0: float) -> tuple[Any, Any]:
        try:
            result = await scorer.submit(captions, qa_lists)
        except EngineFailure as exc:
            engine_errors.inc()
            return None, reply(endpoint, 503, {"error": f"reward engine failed: {exc}"}, t0)
        captions_total.inc(len(captions))
        while scorer.batch_sizes:
            batch_size.observe(scorer.batch_sizes.pop())
        return result, None

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Any:
        t0 = time.perf_counter()
        data, err = await guarded(request, "get_reward")
        if err:
            return err
        try:
            body = RewardRequest.model_validate(data)
            if body.score_mode not in (None, "qa"):
                raise ValueError(f"score_mode {body.score_mode!r} is not served here (this server scores 'qa')")
            captions, qa_lists = official_to_mcqs(body.prompts)
        except (ValidationError, ValueError, InvalidMCQ) as exc:
            return reply("get_reward", 422, {"error": str(exc)}, t0)
        result, err = await score("get_reward", captions, qa_lists, t0)
        return err or reply("get_reward", 200, result, t0)

    @app.post("/v1/reward")
    async def typed_reward(request: Request) -> Any:
        t0 = time.perf_counter()
        data, err = await guarded(request, "v1_reward")
        if err:
            return err
        try:
            captions, qa_lists = typed_to_mcqs(TypedRewardRequest.model_validate(data))
        except (ValidationError, ValueError, InvalidMCQ) as exc:
            return reply("v1_reward", 422, {"error": str(exc)}, t0)
        result, err = await score("v1_reward", captions, qa_lists, t0)
        if err:
            return err
        details = [{k: v[i] for k, v in result.items()} for i in range(len(captions))]
        return reply("v1_reward", 200, {"rewards": result["rewards"], "details": details}, t0)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "answerer": scorer.qa.engine.model_id, "task": cfg.qa.task}

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    app.state.scorer = scorer
    return app


def plan(cfg: RewardServerConfig) -> list[str]:
    auth = f"bearer token from ${cfg.token_env}" if cfg.token_env else "no auth"
    return [f"serve the {cfg.qa.task} QA reward on http://{cfg.host}:{cfg.port} ({auth})",
            f"answerer: {cfg.qa.answerer.name}:{cfg.qa.answerer.model or ''} compat={cfg.qa.compat} "
            f"mode={cfg.qa.mode} qa_num={cfg.qa.qa_num}"]


def run(cfg: RewardServerConfig, *, overwrite: bool = False, progress: Any = None) -> Any:
    import uvicorn

    from caprl_kit.commands import RunReport

    app = create_app(cfg)
    log.info("reward server on http://%s:%d", cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return RunReport(command="serve_reward", output_dir=None)
