"""The reward server's HTTP app (FastAPI, served by uvicorn from ``rewards/server.py``).

- ``POST /get_reward`` takes and answers the **official** bodies (spec §2.6), so the official verl/OpenRLHF recipes
  can point at it unchanged: ``{"prompts": [[caption, [[question_full, answer_letter], ...]], ...], "query": [],
  "labels": [], "score_mode"?}`` -> ``{"rewards", "qa_rewards", "format_rewards" (video)}``.
- ``POST /v1/reward``: our typed endpoint, ``{"captions": [...], "ground_truth": [[{question, choices, answer}]]}``
  -> ``{"rewards": [...], "details": [...]}``; a caption's details hold its reward terms and its QA details as the
  in-process scorer has them (``n_questions``, ``correct``, ``predicted``, ``cannot_answer``).
- ``GET /health``, ``GET /metrics`` (Prometheus text: requests by endpoint/code, latency, batch sizes, engine
  errors).

Every request is validated on its own before it is queued: a ``score_mode`` this server serves, shapes, captions
as strings, non-empty QA lists (``empty_qa: zero``: an empty one is scored 0 and counted instead) and every MCQ
through the strict validator (``caprl_kit.mcq.validate``; an answer given as option text maps to its label). The
answer prompts of every valid request then go into one long-lived engine stream (``Scorer``), so concurrent
requests share the engine and each is answered when its own last prompt is; if the engine breaks, each request it
held is retried on its own, so one request's failure never fails the others. Bad JSON -> 400, body too large ->
413, a score_mode not served, wrong shape, empty QA list or invalid MCQ -> 422 with one line naming the offending
index (or the modes served), missing/wrong token -> 401, engine failure -> 503 with the message: never the silent
zero rewards of the official server.
"""

import contextlib
import json
import os
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from caprl_kit.errors import InvalidMCQ
from caprl_kit.log import get_logger
from caprl_kit.mcq.options import split_question_full
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.rewards.base import RewardOutput
from caprl_kit.rewards.server import RewardServerConfig
from caprl_kit.rewards.server_scorer import EngineFailure, Scored, Scorer
from caprl_kit.schemas.curate import MCQ
from caprl_kit.schemas.reward import RewardRequest

log = get_logger(__name__)

#: ``workers > 1``: the resolved config, handed by ``run`` to each worker process (``worker_app``)
WORKER_CONFIG_ENV = "CAPRL_REWARD_SERVER_CONFIG"
#: the ``score_mode``s this server scores (the official server's other one, vl_judge, is not served here)
SERVED_MODES = ("qa",)


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
    in_flight.set_function(lambda: max(0, scorer.meter.outstanding))
    engine_errors = Counter("caprl_reward_engine_errors", "Engine failures", registry=registry)
    captions_total = Counter("caprl_reward_captions", "Captions scored", registry=registry)
    empty_qa_total = Counter(
        "caprl_reward_empty_qa_captions", "Captions with an empty QA list, scored 0 (empty_qa: zero)", registry=registry
    )
    allow_empty = cfg.empty_qa == "zero"
    empty_qa_captions = 0  # the counter's value, for /health

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
        """The request's scores; a caption with an empty QA list (only let through by ``empty_qa: zero``) does not
        reach the engine: it is 0 in every term."""
        nonlocal empty_qa_captions
        asked = [i for i, qas in enumerate(qa_lists) if qas]
        try:
            if asked:
                scored = await scorer.submit([captions[i] for i in asked], [qa_lists[i] for i in asked])
            else:
                scored = (scorer.rewards([], RewardOutput([], [])), [])
        except EngineFailure as exc:
            engine_errors.inc()
            return None, reply(endpoint, 503, {"error": f"reward engine failed: {exc}"}, t0)
        captions_total.inc(len(captions))
        empty = len(captions) - len(asked)
        if empty:
            empty_qa_total.inc(empty)
            empty_qa_captions += empty
            log.warning("%s: %d caption(s) with an empty QA list scored 0 (empty_qa: zero)", endpoint, empty)
            scored = zeros_between(len(captions), asked, scored, scorer.qa.reduce([[]], []).details[0])
        return scored, None

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Any:
        t0 = time.perf_counter()
        data, err = await guarded(request, "get_reward")
        if err:
            return err
        try:
            refuse_unserved_mode(data)
            body = RewardRequest.model_validate(data)
            captions, qa_lists = official_to_mcqs(body.prompts, allow_empty)
        except ValidationError as exc:
            return reply("get_reward", 422, {"error": one_line(exc)}, t0)
        except (ValueError, InvalidMCQ) as exc:
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
            captions, qa_lists = typed_to_mcqs(TypedRewardRequest.model_validate(data), allow_empty)
        except ValidationError as exc:
            return reply("v1_reward", 422, {"error": one_line(exc)}, t0)
        except (ValueError, InvalidMCQ) as exc:
            return reply("v1_reward", 422, {"error": str(exc)}, t0)
        scored, err = await score("v1_reward", captions, qa_lists, t0)
        if err:
            return err
        result, qa_details = scored
        details = [{**qa_details[i], **{k: v[i] for k, v in result.items()}} for i in range(len(captions))]
        return reply("v1_reward", 200, {"rewards": result["rewards"], "details": details}, t0)

    @app.get("/health")
    async def health() -> Any:
        return {
            "status": "ok",
            "answerer": scorer.qa.engine.model_id,
            "task": cfg.qa.task,
            "score_modes": list(SERVED_MODES),
            "empty_qa": cfg.empty_qa,
            "empty_qa_captions": empty_qa_captions,
        }

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    app.state.scorer = scorer
    return app


def worker_app() -> Any:
    """One worker process's app (``workers > 1``; uvicorn calls it as an app factory): the config ``run`` resolved."""
    return create_app(RewardServerConfig.model_validate_json(os.environ[WORKER_CONFIG_ENV]))


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


def refuse_unserved_mode(data: Any) -> None:
    """A ``score_mode`` this server does not serve is refused before the body is read any further (an official
    vl_judge body has no ``prompts``): one line naming the modes served."""
    mode = data.get("score_mode") if isinstance(data, dict) else None
    if mode is not None and mode not in SERVED_MODES:
        served = ", ".join(repr(m) for m in SERVED_MODES)
        raise ValueError(
            f"score_mode {mode!r} is not served here; this server serves {served} (or leave score_mode out)"
        )


def one_line(exc: ValidationError) -> str:
    """A request body's validation errors as one line: each as ``where: what``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def zeros_between(n: int, asked: list[int], scored: Scored, no_questions: dict[str, Any]) -> Scored:
    """The scores of ``n`` captions from those of the ``asked`` ones: every other caption is 0 in each reward term,
    with ``no_questions`` (the QA details of a caption asked nothing) as its details."""
    result, details = scored
    merged = {key: [0.0] * n for key in result}
    merged_details = [dict(no_questions) for _ in range(n)]
    for j, i in enumerate(asked):
        for key, values in result.items():
            merged[key][i] = values[j]
        merged_details[i] = details[j]
    return merged, merged_details


class TypedRewardRequest(BaseModel):
    """``POST /v1/reward`` body. The items are checked one by one (:func:`typed_to_mcqs`) so errors name their index."""

    captions: list[Any]
    ground_truth: list[Any]


def _qa_list(value: Any, where: str, shape: str, allow_empty: bool) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of {shape}")
    if not value and not allow_empty:
        raise ValueError(
            f"{where}: empty QA list (nothing to score the caption against; a server with empty_qa: zero scores it 0)"
        )
    return value


def typed_to_mcqs(body: TypedRewardRequest, allow_empty: bool = False) -> tuple[list[str], list[list[MCQ]]]:
    """Typed body -> (captions, QA lists), every MCQ through the strict validator. Raises ValueError or InvalidMCQ
    naming the offending index (``ground_truth[1][0]: answer 'E' is not one of the labels A, B``); an empty QA list
    too, unless ``allow_empty``."""
    if len(body.captions) != len(body.ground_truth):
        raise ValueError("captions and ground_truth must have the same length")
    captions, qa_lists = [], []
    for i, (caption, gt) in enumerate(zip(body.captions, body.ground_truth)):
        if not isinstance(caption, str):
            raise ValueError(f"captions[{i}] must be a string, got {type(caption).__name__}")
        qas = _qa_list(gt, f"ground_truth[{i}]", "{question, choices, answer} objects", allow_empty)
        captions.append(caption)
        qa_lists.append([validate_mcq(q, f"ground_truth[{i}][{j}]") for j, q in enumerate(qas)])
    return captions, qa_lists


def official_to_mcqs(prompts: list[list[Any]], allow_empty: bool = False) -> tuple[list[str], list[list[MCQ]]]:
    """Official ``prompts`` -> (captions, QA lists), every MCQ through the strict validator (an answer given as
    option text maps to its label). Raises ValueError or InvalidMCQ naming the offending index
    (``prompts[1].qa[0]: answer 'E' is not one of the labels A, B``); an empty QA list too, unless ``allow_empty``."""
    captions, qa_lists = [], []
    for i, entry in enumerate(prompts):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise ValueError(f"prompts[{i}] must be [caption, [[question_full, answer_letter], ...]]")
        caption, raw = entry
        if not isinstance(caption, str):
            raise ValueError(f"prompts[{i}] caption must be a string, got {type(caption).__name__}")
        qas = []
        for j, qa in enumerate(_qa_list(raw, f"prompts[{i}].qa", "[question_full, answer_letter] pairs", allow_empty)):
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
