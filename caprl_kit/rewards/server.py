"""``caprl serve-reward``: the CapRL reward as an HTTP service (FastAPI + uvicorn).

- ``POST /get_reward`` takes and answers the **official** bodies (spec §2.6), so the official verl/OpenRLHF recipes
  can point at it unchanged: ``{"prompts": [[caption, [[question_full, answer_letter], ...]], ...], "query": [],
  "labels": [], "score_mode"?}`` -> ``{"rewards", "qa_rewards", "format_rewards" (video)}``.
- ``POST /v1/reward``: our typed endpoint, ``{"captions": [...], "ground_truth": [[{question, choices, answer}]]}``
  -> ``{"rewards": [...], "details": [...]}``; a caption's details hold its reward terms and its QA details as the
  in-process scorer has them (``n_questions``, ``correct``, ``predicted``, ``cannot_answer``).
- ``GET /health``, ``GET /metrics`` (Prometheus text: requests by endpoint/code, latency, batch sizes, engine
  errors).

Every request is validated on its own before it is queued: shapes, captions as strings, non-empty QA lists and
every MCQ through the strict validator (``caprl_kit.mcq.validate``; an answer given as option text maps to its
label). The answer prompts of every valid request then go into one long-lived engine stream (``Scorer``), so
concurrent requests share the engine and each is answered when its own last prompt is; if the engine breaks, each
request it held is retried on its own, so one request's failure never fails the others. Bad JSON -> 400, body too
large -> 413, wrong shape, empty QA list or invalid MCQ -> 422 naming the offending index, missing/wrong token ->
401, engine failure -> 503 with the message: never the silent zero rewards of the official server.
"""

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from caprl_kit.backends.base import Feed, Request, Response
from caprl_kit.config import FieldIssue, JobConfig
from caprl_kit.errors import InvalidMCQ
from caprl_kit.log import get_logger
from caprl_kit.mcq.options import split_question_full
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.rewards.base import RewardOutput
from caprl_kit.rewards.config import QARewardConfig, TimestampFormatConfig
from caprl_kit.rewards.qa import Trials
from caprl_kit.schemas.curate import MCQ
from caprl_kit.schemas.reward import RewardRequest

log = get_logger(__name__)

#: answerers that several server processes can share: a client of one engine server, or no model at all
MULTI_WORKER_ANSWERERS = ("openai", "lexical")
#: ``workers > 1``: the resolved config, handed by ``run`` to each worker process (``worker_app``)
WORKER_CONFIG_ENV = "CAPRL_REWARD_SERVER_CONFIG"


class RewardServerConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.rewards.server"

    kind: Literal["serve_reward"] = "serve_reward"
    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(18889, ge=0, le=65535, description="Port (CapRL++ scripts use 18889)")
    token_env: str | None = Field(None, description="Env var holding a bearer token; unset = no auth")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Larger requests get 413")
    qa: QARewardConfig = Field(default_factory=QARewardConfig, description="QA reward and its answerer engine")
    format_weight: float | None = Field(
        None, description="Weight of the timestamp-format term; default 0.2 for video, 0 for image (spec §2.4)"
    )
    timestamp_format: TimestampFormatConfig = Field(default_factory=TimestampFormatConfig)
    workers: int = Field(
        1,
        ge=1,
        description="Server processes sharing the port (uvicorn workers), each with its own answerer client; "
        "above 1 only for an answerer behind HTTP (openai) or the lexical one",
    )

    @model_validator(mode="after")
    def _scores_itself(self) -> "RewardServerConfig":
        if self.qa.service is not None:
            raise FieldIssue(
                "qa.service",
                "a reward server scores with its own answerer (qa.answerer), not through another server",
                "remove qa.service",
            )
        if self.workers > 1 and self.qa.answerer.name not in MULTI_WORKER_ANSWERERS:
            raise FieldIssue(
                "workers",
                f"each worker would load its own {self.qa.answerer.name} engine with the model",
                "serve the answerer once (vllm serve) and point qa.answerer at it (name: openai), or set workers: 1",
            )
        return self


class TypedRewardRequest(BaseModel):
    """``POST /v1/reward`` body. The items are checked one by one (:func:`typed_to_mcqs`) so errors name their index."""

    captions: list[Any]
    ground_truth: list[Any]


class EngineFailure(Exception):
    pass


#: one request's scores: the reward lists of the official body, and each caption's QA details (``QAScorer.reduce``)
Scored = tuple[dict[str, list[float]], list[dict[str, Any]]]


# --------------------------------------------------------------------------- scoring core


@dataclass
class _Job:
    """One HTTP request's scoring: its answer prompts and the answers so far."""

    captions: list[str]
    requests: list[Request]
    plan: Trials
    fut: asyncio.Future
    loop: asyncio.AbstractEventLoop
    responses: list[Response | None]
    left: int


class Scorer:
    """QA accuracy (+ format for video) on ONE long-lived engine stream, as the batch stages feed theirs: every
    request's answer prompts go into ``Backend.stream`` through a ``Feed``, the engine keeps up to its ``in_flight``
    prompts running whatever request they came from (vllm: its scheduler; openai: one concurrency limit;
    transformers: a batch of what is waiting), and a request is answered as soon as its own last prompt is, never
    after another request's longest answer. If the stream breaks (the engine raised), every request it held is
    retried on its own, so a request that breaks the engine fails only itself (503); the stream then restarts."""

    def __init__(self, cfg: RewardServerConfig, engine: Any = None):
        from caprl_kit.rewards.qa import QAScorer
        from caprl_kit.rewards.timestamp_format import TimestampFormatReward

        self.cfg = cfg
        self.qa = QAScorer(cfg.qa, engine)
        self.fmt = TimestampFormatReward(cfg.timestamp_format)
        weight = cfg.format_weight if cfg.format_weight is not None else (0.2 if cfg.qa.task == "video" else 0.0)
        self.format_weight = 0.0 if cfg.qa.task == "image" else weight
        self.feed = Feed()
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()
        self.scored: deque[int] = deque(maxlen=10_000)  #: captions of each answered request, newest last
        self.retried_alone = 0  #: requests retried on their own after the stream broke
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def rewards(self, captions: list[str], out: RewardOutput) -> dict[str, list[float]]:
        result = {"qa_rewards": out.scores}
        if self.cfg.qa.task == "video":
            fmt = self.fmt.compute(captions).scores
            result["format_rewards"] = fmt
            result["rewards"] = [q + self.format_weight * f for q, f in zip(out.scores, fmt)]
        else:
            result["rewards"] = list(out.scores)
        return result

    def start(self) -> None:
        self._thread = threading.Thread(target=self._pump, name="caprl-reward-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self.feed.close()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def submit(self, captions: list[str], qa_lists: list[list[MCQ]]) -> Scored:
        loop = asyncio.get_running_loop()
        requests, plan = self.qa.plan(captions, qa_lists)
        job_id = f"r{next(self._ids)}"
        for k, request in enumerate(requests):
            request.id = f"{job_id}:{k}"
        job = _Job(captions, requests, plan, loop.create_future(), loop, [None] * len(requests), len(requests))
        with self.lock:
            self.jobs[job_id] = job
            self.feed.put(requests)
        return await job.fut

    # ------------------------------------------------------------------ the engine thread
    def _pump(self) -> None:
        while not self._stopping:
            feed = self.feed
            try:
                for response in self.qa.engine.stream(feed):
                    feed.answered()
                    self._take(response)
                return  # closed
            except Exception as exc:  # noqa: BLE001 - the engine raised: retry what it held, one request at a time
                with self.lock:
                    broken = list(self.jobs.values())
                    self.jobs.clear()
                    self.feed = Feed()
                log.warning(
                    "reward engine failed with %d request(s) in it (%s: %s); retrying each on its own",
                    len(broken),
                    type(exc).__name__,
                    exc,
                )
                for job in broken:
                    self._alone(job)

    def _take(self, response: Response) -> None:
        job_id, _, k = (response.id or "").rpartition(":")
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            job.responses[int(k)] = response
            job.left -= 1
            if job.left:
                return
            del self.jobs[job_id]
        self._finish(job, job.responses)  # type: ignore[arg-type]  # every response is in once the job is finished

    def _alone(self, job: _Job) -> None:
        self.retried_alone += 1
        try:
            responses = self.qa.engine.generate(job.requests)
        except Exception as exc:  # noqa: BLE001 - this request breaks the engine: it alone gets the 503
            self._settle(job, exc=exc)
            return
        self._finish(job, responses)

    def _finish(self, job: _Job, responses: list[Response]) -> None:
        try:
            out = self.qa.reduce(job.plan, responses)
            result = (self.rewards(job.captions, out), out.details)
        except Exception as exc:  # noqa: BLE001 - an answer prompt failed (engine error response)
            self._settle(job, exc=exc)
            return
        self.scored.append(len(job.captions))
        self._settle(job, result)

    def _settle(self, job: _Job, result: Scored | None = None, exc: Exception | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # the server is shutting down: its loop is closed
            job.loop.call_soon_threadsafe(_settle, job.fut, result, exc)


def _settle(fut: asyncio.Future, result: Scored | None = None, exc: Exception | None = None) -> None:
    if fut.done():  # the client went away
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


def bearer_token(cfg: RewardServerConfig) -> str | None:
    """The token requests must carry (None: no auth); a ``token_env`` that is unset or empty is a ConfigError."""
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    if cfg.token_env and not (token or "").strip():
        from caprl_kit.errors import ConfigError, ConfigIssue

        state = "empty" if token is not None else "unset"
        raise ConfigError(
            [
                ConfigIssue(
                    "token_env",
                    f"names ${cfg.token_env}, which is {state}",
                    f"export {cfg.token_env}=<token>, or drop token_env to serve without auth",
                )
            ]
        )
    return token


def create_app(cfg: RewardServerConfig, engine: Any = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    token = bearer_token(cfg)  # checked before the answerer loads
    scorer = Scorer(cfg, engine)
    registry = CollectorRegistry()
    requests_total = Counter(
        "caprl_reward_requests", "Requests by endpoint and status", ["endpoint", "code"], registry=registry
    )
    latency = Histogram("caprl_reward_latency_seconds", "Request latency", ["endpoint"], registry=registry)
    in_flight = Gauge("caprl_reward_in_flight_prompts", "Answer prompts inside the engine", registry=registry)
    in_flight.set_function(lambda: max(0, scorer.feed.outstanding))
    engine_errors = Counter("caprl_reward_engine_errors", "Engine failures", registry=registry)
    captions_total = Counter("caprl_reward_captions", "Captions scored", registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        scorer.start()
        yield
        scorer.stop()

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
        scored, err = await score("get_reward", captions, qa_lists, t0)
        return err or reply("get_reward", 200, scored[0], t0)

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
        scored, err = await score("v1_reward", captions, qa_lists, t0)
        if err:
            return err
        result, qa_details = scored
        details = [{**qa_details[i], **{k: v[i] for k, v in result.items()}} for i in range(len(captions))]
        return reply("v1_reward", 200, {"rewards": result["rewards"], "details": details}, t0)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "answerer": scorer.qa.engine.model_id, "task": cfg.qa.task}

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    app.state.scorer = scorer
    return app


def worker_app() -> Any:
    """One worker process's app (``workers > 1``; uvicorn calls it as an app factory): the config ``run`` resolved."""
    return create_app(RewardServerConfig.model_validate_json(os.environ[WORKER_CONFIG_ENV]))


def plan(cfg: RewardServerConfig) -> list[str]:
    auth = f"bearer token from ${cfg.token_env}" if cfg.token_env else "no auth"
    workers = f", {cfg.workers} worker processes" if cfg.workers > 1 else ""
    return [
        f"serve the {cfg.qa.task} QA reward on http://{cfg.host}:{cfg.port} ({auth}{workers})",
        f"answerer: {cfg.qa.answerer.name}:{cfg.qa.answerer.model or ''} compat={cfg.qa.compat} "
        f"mode={cfg.qa.mode} qa_num={cfg.qa.qa_num}",
    ]


def run(cfg: RewardServerConfig, *, overwrite: bool = False, progress: Any = None) -> Any:
    """Serve until SIGINT/SIGTERM. ``workers > 1``: uvicorn's supervisor binds the port and starts that many worker
    processes (spawned, each building the app with ``worker_app``), restarts one that dies, and stops them all on
    the signal; the kernel hands each connection to one worker, so a request, with every question of its captions,
    is scored by one worker."""
    import uvicorn

    from caprl_kit.backends import build_backend
    from caprl_kit.progress import RunReport

    log.info("reward server on http://%s:%d", cfg.host, cfg.port)
    if cfg.workers == 1:
        uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning")
        return RunReport(command="serve_reward", output_dir=None)
    bearer_token(cfg)  # what each worker would refuse, refused once here
    build_backend(cfg.qa.answerer).close()  # likewise the answerer's settings (an openai key variable set but empty)
    os.environ[WORKER_CONFIG_ENV] = cfg.model_dump_json()
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
    )
    return RunReport(command="serve_reward", output_dir=None)
