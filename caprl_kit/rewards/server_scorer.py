"""The reward server's scoring: QA accuracy (+ the timestamp-format term for video) of every HTTP request's captions
on ONE long-lived engine stream, the same stream machinery the batch stages run on (``runners/stream.py``).

An HTTP request is one shard of one unit of work: ``submit`` plans its answer prompts and queues it on a
``LiveStream``; the stream hands the prompts to ``Backend.stream``, which keeps up to its ``in_flight`` prompts
running whatever request they came from (vllm: its scheduler; openai: one concurrency limit; transformers: a batch
of what is waiting); the request is reduced to its rewards as soon as its own last answer is in (``_finish``), never
after another request's longest answer, and its "commit" hands the scores back to the HTTP handler. An answer that
failed at the engine fails only its own request (503). If the engine raises, every request the stream held is
redone on a stream of its own (``LiveStream(alone=True)``), so a request that breaks the engine fails only itself;
the live stream then goes on."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from caprl_kit.backends.base import Request, Response
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.rewards.base import RewardOutput
from caprl_kit.rewards.qa import Trials
from caprl_kit.rewards.server import RewardServerConfig
from caprl_kit.runners.stream import InFlight, LiveStream, ShardStream, Work
from caprl_kit.schemas.curate import MCQ

log = get_logger(__name__)


class EngineFailure(Exception):
    pass


#: one request's scores: the reward lists of the official body, and each caption's QA details (``QAScorer.reduce``)
Scored = tuple[dict[str, list[float]], list[dict[str, Any]]]


@dataclass
class _Job:
    """One HTTP request's scoring: its captions, their answer prompts and how the answers reduce."""

    captions: list[str]
    requests: list[Request]
    plan: Trials


@dataclass
class Outcome:
    """What a request's "commit" hands back: its scores, or why the engine could not give them."""

    shard_id: int
    scored: Scored | None = None
    error: str | None = None


class Scorer:
    """QA accuracy (+ format for video) on one long-lived engine stream (the module's docstring has the walk)."""

    engine_label = "reward answerer"

    def __init__(self, cfg: RewardServerConfig, engine: Any = None):
        from caprl_kit.rewards.qa import QAScorer
        from caprl_kit.rewards.timestamp_format import TimestampFormatReward

        self.cfg = cfg
        self.qa = QAScorer(cfg.qa, engine)
        self.fmt = TimestampFormatReward(cfg.timestamp_format)
        weight = cfg.format_weight if cfg.format_weight is not None else (0.2 if cfg.qa.task == "video" else 0.0)
        self.format_weight = 0.0 if cfg.qa.task == "image" else weight
        self.meter = InFlight()  #: answer prompts inside the engine now, and the most at once
        self.scored: deque[int] = deque(maxlen=10_000)  #: captions of each answered request, newest last
        self._ids = itertools.count()
        self._live: LiveStream[Outcome] | None = None

    @property
    def retried_alone(self) -> int:
        """Requests redone on a stream of their own after the engine raised."""
        return self._live.redone_alone if self._live is not None else 0

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
        self._live = LiveStream(self, alone=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.close()

    async def submit(self, captions: list[str], qa_lists: list[list[MCQ]]) -> Scored:
        assert self._live is not None, "start() the scorer first"
        requests, plan = self.qa.plan(captions, qa_lists)
        spec = ShardSpec(next(self._ids), 0, 1)
        try:
            outcome: Outcome = await asyncio.wrap_future(self._live.submit(spec, [_Job(captions, requests, plan)]))
        except Exception as exc:  # noqa: BLE001 - the engine raised on this request even when it ran alone
            log.warning("reward engine failed for a request: %s: %s", type(exc).__name__, exc)
            raise EngineFailure(f"{type(exc).__name__}: {exc}") from None
        if outcome.scored is None:
            raise EngineFailure(outcome.error)
        return outcome.scored

    # ------------------------------------------------------------------ the stage, on the stream's thread
    def open_stream(self) -> ShardStream[Outcome]:
        return ShardStream(self, self.qa.engine, meter=self.meter, answers_engine_failures=True)

    def plan(self, spec: ShardSpec, items: list[_Job]) -> Iterator[Work]:
        job = items[0]
        yield Work(list(job.requests), lambda responses: [self._finish(job, responses)])

    def _finish(self, job: _Job, responses: list[Response]) -> dict[str, Any]:
        try:
            out = self.qa.reduce(job.plan, responses)
            scored = (self.rewards(job.captions, out), out.details)
        except Exception as exc:  # noqa: BLE001 - an answer prompt failed (an engine error response)
            log.warning("reward engine failed for a request: %s: %s", type(exc).__name__, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}
        self.scored.append(len(job.captions))
        return {"scored": scored}

    def commit(
        self,
        spec: ShardSpec,
        items: list[_Job],
        rows: list[dict[str, Any]],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> Outcome:
        return Outcome(spec.shard_id, **rows[0])
