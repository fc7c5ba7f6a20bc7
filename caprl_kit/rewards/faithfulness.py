"""``faithfulness``: claim precision. A caption is split into atomic claims (``claims.CLAIM_SPLITTERS``: the
model-free ``rules`` or an ``llm``), a verifier is asked about each claim *on its own* against the evidence (a VLM
with the image or video, or any text back end, the model-free ``lexical`` one included, with a reference caption),
and the score is supported / (supported + unsupported). A reply that is not a plain yes or no is *unknown*: reported,
never counted as supported. Every claim of every caption of a batch goes through one ``Backend.stream``.

The reward is the claim precision; a caption without a claim that got a yes or a no (empty, or all unknown) earns
0, so saying nothing is never the safe answer. Each caption's details keep its claims, their verdicts, the
unsupported ones for inspection, and what checking it cost (requests, tokens, and seconds: the batch's wall time
over its captions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Backend, Request, SamplingParams
from caprl_kit.claims import CLAIM_SPLITTERS, ClaimSplitError, Cost, parse_verdict, stream_ordered
from caprl_kit.prompts import PROMPTS
from caprl_kit.registry import Registry
from caprl_kit.rewards.base import RewardError, RewardOutput, completion_text
from caprl_kit.rewards.config import FaithfulnessConfig

#: a verifier prompt: the evidence (a reference caption's lines, or nothing: the media travel as parts), the question,
#: then the one claim
REFERENCE_LAYOUT = "Reference: <Reference Start> {reference} <Reference End>\n{question}\nStatement: {claim}"
MEDIA_LAYOUT = "{question}\nStatement: {claim}"
VERDICTS = {True: "yes", False: "no", None: "unknown"}


@dataclass
class Evidence:
    """What one caption is checked against: a reference caption, or the item's image or video."""

    reference: str | None = None
    image: Any = None
    video: Any = None


class ReferenceEvidence:
    """``evidence: reference``: the claim and the reference caption in one text prompt."""

    def missing(self, ev: Evidence) -> bool:
        return not (ev.reference or "").strip()

    def prompt_name(self, ev: Evidence) -> str:
        return "claim_verify_reference"

    def request(self, claim: str, ev: Evidence, question: str, sampling: SamplingParams) -> Request:
        text = REFERENCE_LAYOUT.format(reference=" ".join(str(ev.reference).split()), question=question, claim=claim)
        return Request.user(text, sampling=sampling)


class MediaEvidence:
    """``evidence: media``: the claim as text after the item's image or video."""

    def missing(self, ev: Evidence) -> bool:
        return ev.image is None and ev.video is None

    def prompt_name(self, ev: Evidence) -> str:
        return "claim_verify_video" if ev.video is not None else "claim_verify_image"

    def request(self, claim: str, ev: Evidence, question: str, sampling: SamplingParams) -> Request:
        return Request.user(
            MEDIA_LAYOUT.format(question=question, claim=claim),
            images=[ev.image] if ev.video is None else [],
            videos=[ev.video] if ev.video is not None else [],
            sampling=sampling,
        )


EVIDENCE = Registry("claim evidence")
EVIDENCE.register("reference", ReferenceEvidence())
EVIDENCE.register("media", MediaEvidence())


class FaithfulnessScorer:
    """Claim precision of captions against their evidence (the module's docstring has the rule)."""

    def __init__(self, cfg: FaithfulnessConfig, engine: Backend | None = None, splitter_engine: Backend | None = None):
        self.cfg = cfg
        v = cfg.verifier
        self.engine = engine or build_backend(v.backend)
        if splitter_engine is None and cfg.splitter.backend == v.backend:
            splitter_engine = self.engine  # the same model splits and verifies: one engine
        self.splitter = CLAIM_SPLITTERS.get(cfg.splitter.name)(cfg.splitter, engine=splitter_engine)
        self.evidence = EVIDENCE.get(v.evidence)
        self.sampling = SamplingParams.from_config(v.sampling)

    def score(self, captions: Sequence[str], evidence: Sequence[Evidence]) -> RewardOutput:
        """Each caption's claim precision (``faithfulness_reward``: 0 when nothing was verified) and details."""
        for i, ev in enumerate(evidence):
            if self.evidence.missing(ev):
                raise RewardError(f"faithfulness: caption {i} has no evidence: {self._needs()}")
        t0 = time.perf_counter()
        try:
            claims, costs = self.splitter.split(captions)
        except ClaimSplitError as exc:
            raise RewardError(f"faithfulness: {exc}") from None
        owners, requests = [], []
        for i, (cs, ev) in enumerate(zip(claims, evidence)):
            question = PROMPTS.get(self.cfg.verifier.prompt or self.evidence.prompt_name(ev))
            for claim in cs:
                owners.append(i)
                requests.append(self.evidence.request(claim, ev, question, self.sampling))
        responses = stream_ordered(self.engine, requests)
        failed = [r for r in responses if not r.ok]
        if failed:
            raise RewardError(
                f"faithfulness verifier failed on {len(failed)} of {len(responses)} claims: {failed[0].error}"
            )
        verdicts: list[list[bool | None]] = [[] for _ in captions]
        for i, resp in zip(owners, responses):
            verdicts[i].append(parse_verdict(resp.text))
            costs[i].add(resp)
        seconds = (time.perf_counter() - t0) / max(1, len(captions))
        details = [claim_details(cs, vs, cost, seconds) for cs, vs, cost in zip(claims, verdicts, costs)]
        return RewardOutput([d["faithfulness_reward"] for d in details], details)

    def _needs(self) -> str:
        v = self.cfg.verifier
        if v.evidence == "reference":
            return (
                f"evidence: reference reads a reference caption from the '{v.reference_column}' column "
                "(faithfulness.verifier.reference_column)"
            )
        return "evidence: media reads the item's image (images) or video (videos)"


def claim_details(claims: list[str], verdicts: list[bool | None], cost: Cost, seconds: float) -> dict[str, Any]:
    """One caption's faithfulness details from its claims and their verdicts (True / False / None: unknown).

    >>> d = claim_details(["a", "b", "c"], [True, False, None], Cost(3, 30), 0.5)
    >>> d["claim_precision"], d["unsupported_claims"], d["n_unknown"], d["faithfulness_requests"]
    (0.5, ['b'], 1, 3)
    """
    supported = sum(v is True for v in verdicts)
    unsupported = sum(v is False for v in verdicts)
    precision = supported / (supported + unsupported) if supported + unsupported else None
    return {
        "faithfulness_reward": precision if precision is not None else 0.0,
        "claim_precision": precision,
        "n_claims": len(claims),
        "n_supported": supported,
        "n_unsupported": unsupported,
        "n_unknown": sum(v is None for v in verdicts),
        "claims": list(claims),
        "verdicts": [VERDICTS[v] for v in verdicts],
        "unsupported_claims": [c for c, v in zip(claims, verdicts) if v is False],
        "faithfulness_requests": cost.requests,
        "faithfulness_tokens": cost.tokens,
        "faithfulness_seconds": seconds,
    }


class FaithfulnessReward:
    """TRL-shaped reward: ``reward(completions, **columns) -> list[float]``, the claim precision of each completion.
    Its evidence per row: the ``verifier.reference_column`` column (evidence: reference), or ``images`` / ``videos``
    (evidence: media)."""

    __name__ = "faithfulness"

    config_key = "faithfulness"  #: its block in RewardConfig
    shares: tuple[str, ...] = ()  #: what it takes from the caller (the answerer engine, the tokenizer)

    def __init__(self, cfg: FaithfulnessConfig | None = None, engine: Backend | None = None, **_: Any):
        self.scorer = FaithfulnessScorer(cfg or FaithfulnessConfig(), engine)
        self.last_details: list[dict[str, Any]] = []

    def compute(
        self,
        completions: Sequence[Any],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        **columns: Any,
    ) -> RewardOutput:
        n = len(completions)
        column = self.scorer.cfg.verifier.reference_column
        references = columns.get(column)
        if self.scorer.cfg.verifier.evidence == "reference" and references is None:
            raise RewardError(f"faithfulness: no '{column}' column in the rows: {self.scorer._needs()}")
        evidence = [
            Evidence(
                reference=_at(references, i),
                image=_first(_at(images, i)),
                video=_first(_at(videos, i)),
            )
            for i in range(n)
        ]
        out = self.scorer.score([completion_text(c) for c in completions], evidence)
        self.last_details = out.details
        return out

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores


def _at(values: Sequence[Any] | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def _first(value: Any) -> Any:
    """A row's media value: the first of a list (TRL's ``images`` column), else the value itself."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value
