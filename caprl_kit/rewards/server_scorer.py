"""The reward server's scoring: QA accuracy (+ the timestamp-format term for video) of every HTTP request's captions
on ONE long-lived engine stream (``Scorer``), each request answered as soon as its own last answer prompt is."""

import asyncio
import contextlib
import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from caprl_kit.backends.base import Feed, Request, Response
from caprl_kit.log import get_logger
from caprl_kit.rewards.base import RewardOutput
from caprl_kit.rewards.qa import Trials
from caprl_kit.rewards.server import RewardServerConfig
from caprl_kit.schemas.curate import MCQ

log = get_logger(__name__)


class EngineFailure(Exception):
    pass


#: one request's scores: the reward lists of the official body, and each caption's QA details (``QAScorer.reduce``)
Scored = tuple[dict[str, list[float]], list[dict[str, Any]]]


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
