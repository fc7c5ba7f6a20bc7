"""A caption as atomic claims, and a verifier's yes/no about one claim.

The splitters (``CLAIM_SPLITTERS``, chosen by ``faithfulness.splitter.name``):

- ``rules`` (model-free): sentences (at ``.``/``!``/``?`` before a space, and at line breaks), then clauses at ``;``,
  at "while"/"whereas"/", but", and at "and" or a comma when a new noun phrase follows ("a red circle and a blue
  square" is two claims; "a red and blue flag" stays one); a "with" list becomes one claim per item, each with the
  head ("a table with a cup, a plate and a fork": "a table with a cup", "a table with a plate", "a table with a
  fork").
- ``llm``: any back end is asked for one claim per line (the ``claim_split`` prompt); bullets and numbering are
  stripped. All captions of a batch go through one ``Backend.stream``.

``parse_verdict`` reads a verifier's reply strictly: its first word is yes or no, and the other never appears as
a word; anything else is ``None`` (unknown, never counted as supported).

>>> split_rules("A red circle at the left and a blue square at the top. The star is green; it is small.")
['A red circle at the left', 'a blue square at the top', 'The star is green', 'it is small']
>>> [parse_verdict(t) for t in ("Yes.", "no, it is blue", "Answer: yes", "Yes and no")]
[True, False, None, None]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from caprl_kit.errors import CaprlError
from caprl_kit.registry import Registry

if TYPE_CHECKING:
    from caprl_kit.backends.base import Backend, Request, Response
    from caprl_kit.rewards.config import ClaimSplitterConfig

#: words that open a new noun phrase (or clause): an "and" or a comma before one separates two claims
_NEW_PHRASE = (
    r"(?:a|an|the|one|two|three|four|five|six|some|several|many|his|her|their|its|this|that|these|those|there|it"
    r"|he|she|they)\b"
)
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
STRONG_RE = re.compile(r"\s*;\s*|,?\s+(?:while|whereas)\s+|,\s*but\s+", re.IGNORECASE)
PHRASE_RE = re.compile(rf"(?:,\s*and|,|\s+and)\s+(?={_NEW_PHRASE})", re.IGNORECASE)
WITH_RE = re.compile(r"\s+with\s+", re.IGNORECASE)
LIST_RE = re.compile(r",\s*(?:and\s+)?|\s+and\s+", re.IGNORECASE)
BULLET_RE = re.compile(r"^\s*(?:(?:[-*•]+|\(?\d+[.)]|claim\s*\d*\s*:)\s*)+", re.IGNORECASE)
VERDICT_RE = re.compile(r"[a-z]+")

CLAIM_SPLITTERS = Registry("claim splitter")


class ClaimSplitError(CaprlError):
    """The llm splitter's engine failed a request: no claims, rather than a caption counted as claiming nothing."""


def _tidy(text: str) -> str:
    """A claim without surrounding space, trailing punctuation or a leading "and"."""
    text = re.sub(r"^(?:and|but)\s+", "", text.strip(), flags=re.IGNORECASE)
    return text.strip().rstrip(".!?,;:").strip()


def _with_list(clause: str) -> list[str]:
    """ "X with A, B and C" -> ["X with A", "X with B", "X with C"]; else the clause's noun phrases (``PHRASE_RE``)."""
    parts = WITH_RE.split(clause, maxsplit=1)
    if len(parts) == 2:
        head, tail = parts
        items = [t for t in (_tidy(x) for x in LIST_RE.split(tail)) if t]
        if len(items) >= 2:
            return [f"{head} with {item}" for item in items]
    return PHRASE_RE.split(clause)


def split_rules(caption: str) -> list[str]:
    """The caption's claims by the rules above (the module's docstring), in order; none for an empty caption."""
    claims = []
    for sentence in SENTENCE_RE.split(caption.strip()):
        for clause in STRONG_RE.split(sentence):
            for part in _with_list(BULLET_RE.sub("", clause)):
                claim = _tidy(part)
                if re.search(r"\w", claim):
                    claims.append(claim)
    return claims


def parse_claim_lines(text: str) -> list[str]:
    """An LLM's claims, one per line: bullets (``-``, ``*``), numbering (``1.``, ``(2)``) and ``Claim 3:`` stripped,
    blank lines dropped."""
    claims = []
    for line in text.splitlines():
        claim = _tidy(BULLET_RE.sub("", line))
        if re.search(r"\w", claim):
            claims.append(claim)
    return claims


def parse_verdict(text: str | None) -> bool | None:
    """True (yes), False (no) or None (unknown): the reply's first word decides, and the other answer may not appear
    as a word anywhere in it ("Yes and no" is unknown)."""
    words = VERDICT_RE.findall((text or "").lower())
    if not words or words[0] not in ("yes", "no"):
        return None
    other = "no" if words[0] == "yes" else "yes"
    return None if other in words else words[0] == "yes"


@dataclass
class Cost:
    """What checking one caption took: engine requests and their tokens (prompt + completion)."""

    requests: int = 0
    tokens: int = 0

    def add(self, response: Response) -> None:
        self.requests += 1
        self.tokens += (response.prompt_tokens or 0) + sum(response.completion_tokens)


def stream_ordered(engine: Backend, requests: Sequence[Request]) -> list[Response]:
    """Every request through ONE ``engine.stream`` (the engine batches them as it does any stream: transformers by
    batch, vllm by its scheduler, openai by its concurrency limit); the responses back in request order."""
    for i, req in enumerate(requests):
        req.id = str(i)
    got: dict[str, Response] = {}
    if requests:
        for resp in engine.stream(requests):
            got[str(resp.id)] = resp
    return [got[str(i)] for i in range(len(requests))]


class ClaimSplitter(Protocol):
    """Splits a batch of captions into claims; returns each caption's claims and what splitting it cost. A registered
    splitter (``file:path.py:Class`` too) is built as ``Class(splitter_config, engine=engine_or_None)``."""

    def split(self, captions: Sequence[str]) -> tuple[list[list[str]], list[Cost]]: ...


@CLAIM_SPLITTERS.register("rules")
class RuleSplitter:
    """The model-free splitter: ``split_rules``; it costs no request."""

    def __init__(self, cfg: ClaimSplitterConfig | None = None, **_: Any):
        self.cfg = cfg

    def split(self, captions: Sequence[str]) -> tuple[list[list[str]], list[Cost]]:
        return [split_rules(c) for c in captions], [Cost() for _ in captions]


@CLAIM_SPLITTERS.register("llm")
class LLMSplitter:
    """An LLM writes each caption's claims one per line (``splitter.prompt``, then the caption); one request per
    non-empty caption, all of them on one stream. A failed request raises ``ClaimSplitError``."""

    def __init__(self, cfg: ClaimSplitterConfig, engine: Backend | None = None, **_: Any):
        from caprl_kit.backends import build_backend
        from caprl_kit.backends.base import SamplingParams
        from caprl_kit.prompts import PROMPTS

        assert cfg.backend is not None, "the config requires splitter.backend with the llm splitter"
        self.engine = engine or build_backend(cfg.backend)
        self.instruction = PROMPTS.get(cfg.prompt)
        self.sampling = SamplingParams.from_config(cfg.sampling)

    def split(self, captions: Sequence[str]) -> tuple[list[list[str]], list[Cost]]:
        from caprl_kit.backends.base import Request

        asked = [i for i, c in enumerate(captions) if c.strip()]
        requests = [
            Request.user(f"{self.instruction}\n\nCaption: {captions[i].strip()}", sampling=self.sampling) for i in asked
        ]
        responses = stream_ordered(self.engine, requests)
        failed = [r for r in responses if not r.ok]
        if failed:
            raise ClaimSplitError(
                f"claim splitter failed on {len(failed)} of {len(responses)} captions: {failed[0].error}"
            )
        claims: list[list[str]] = [[] for _ in captions]
        costs = [Cost() for _ in captions]
        for i, resp in zip(asked, responses):
            claims[i] = parse_claim_lines(resp.texts[0] if resp.texts else "")
            costs[i].add(resp)
        return claims, costs
