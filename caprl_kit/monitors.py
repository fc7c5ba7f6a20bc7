"""Caption hygiene monitors: the known ways RL-trained captioners drift, flagged per caption and counted per run.

Flags (``FLAGS``), each decided from the caption text and the engine's finish reason alone:

- ``truncated``: the engine stopped at the length cap (finish reason ``length``); CapRL++ reports over 30% of
  responses truncated without its length reward.
- ``repetitive``: the share of repeated word n-grams (``monitors.ngram`` words, default 4; punctuation counts as a
  word) is above ``monitors.max_repeat_share`` (default 0.3): a caption looping "... the left . the left .".
- ``boilerplate_opener``: the caption starts with a stock phrase (``monitors.openers``, regular expressions matched
  at the start, case-insensitive), e.g. "Based on the provided video frames", "The image shows".
- ``meta_ending``: the last sentence talks about the caption or the reader instead of the media
  (``monitors.meta_endings``, searched in the last sentence), e.g. "This description captures every detail.",
  "Overall, ...", "I hope this helps".
- ``empty``: nothing but whitespace.

``clean_caption`` removes a boilerplate opener and trailing meta sentences (never the whole caption): annotate
writes it as ``caption_clean`` when ``output.clean`` is on, keeping the raw caption.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from pydantic import Field

from caprl_kit.config import ConfigModel

FLAGS = ("truncated", "repetitive", "boilerplate_opener", "meta_ending", "empty")
FLAG_METRIC = "monitor_{}"  #: metric names: monitor_captions, monitor_truncated, ...
TEXT_FLAGS = tuple(f for f in FLAGS if f != "truncated")  #: the flags the text alone decides

DEFAULT_OPENERS = [
    r"based on the (provided |given )?(video frames|video|frames|images?)\b[^,.:]*[,.:]?",
    r"(the|this) (image|picture|photo|photograph|video|clip|frame|scene) (shows|depicts|features|displays|captures"
    r"|presents|showcases|illustrates|portrays|contains)\b",
    r"in (this|the) (image|picture|photo|photograph|video|clip|scene)\b,?",
    r"(here is|here's|below is) a (detailed |comprehensive )?(description|caption)\b[^:.]*[:.]?",
]
DEFAULT_META_ENDINGS = [
    r"\b(this|the|my|above) (detailed |comprehensive |thorough )?(description|caption|analysis|summary|breakdown)\b",
    r"^(overall|in summary|in conclusion|to summarize|to sum up)\b",
    r"\b(i hope|let me know|feel free to)\b",
]


class MonitorConfig(ConfigModel):
    ngram: int = Field(4, ge=1, description="Words per n-gram of the repetition monitor")
    max_repeat_share: float = Field(
        0.3, ge=0.0, le=1.0, description="A caption whose share of repeated n-grams is above this is flagged repetitive"
    )
    openers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPENERS),
        description="Regular expressions of boilerplate openers, matched at the start of a caption (case-insensitive)",
    )
    meta_endings: list[str] = Field(
        default_factory=lambda: list(DEFAULT_META_ENDINGS),
        description="Regular expressions searched in a caption's last sentence (case-insensitive)",
    )


_WORDS = re.compile(r"\w+|[^\w\s]")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def repeat_share(text: str, n: int = 4) -> float:
    """Share of the caption's word n-grams that repeat an earlier one (0: none; near 1: one phrase looping)."""
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def _opener(text: str, cfg: MonitorConfig) -> re.Match[str] | None:
    stripped = text.lstrip()
    return next((m for p in _compiled(tuple(cfg.openers)) if (m := p.match(stripped))), None)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCES.split(text.strip()) if s]


def _is_meta(sentence: str, cfg: MonitorConfig) -> bool:
    return any(p.search(sentence) for p in _compiled(tuple(cfg.meta_endings)))


def caption_flags(text: str | None, finish_reason: str | None = None, cfg: MonitorConfig | None = None) -> list[str]:
    """The flags of one caption, in ``FLAGS`` order."""
    cfg = cfg or MonitorConfig()
    text = text or ""
    flags = set()
    if finish_reason == "length":
        flags.add("truncated")
    if not text.strip():
        flags.add("empty")
    else:
        if repeat_share(text, cfg.ngram) > cfg.max_repeat_share:
            flags.add("repetitive")
        if _opener(text, cfg):
            flags.add("boilerplate_opener")
        sentences = _sentences(text)
        if len(sentences) > 1 and _is_meta(sentences[-1], cfg):
            flags.add("meta_ending")
    return [f for f in FLAGS if f in flags]


def clean_caption(text: str | None, cfg: MonitorConfig | None = None) -> str | None:
    """The caption without its boilerplate opener and trailing meta sentences; never emptied (a caption that is
    nothing else stays as it was)."""
    if text is None:
        return None
    cfg = cfg or MonitorConfig()
    sentences = _sentences(text)
    while len(sentences) > 1 and _is_meta(sentences[-1], cfg):
        sentences.pop()
    body = " ".join(sentences)
    m = _opener(body, cfg)
    if m:
        rest = body.lstrip()[m.end() :].lstrip(" ,:;-")
        if rest:
            body = rest[0].upper() + rest[1:]
    return body if body.strip() else text


def flag_values(text: str | None, cfg: MonitorConfig | None = None) -> dict[str, float]:
    """The text-only flags as 0/1 scalars keyed ``monitor_<flag>``, for trainers' per-sample metrics (a trainer's
    completion has no finish reason: TRL logs ``completions/clipped_ratio``, verl ``response_length/clip_ratio``)."""
    found = caption_flags(text, None, cfg)
    return {FLAG_METRIC.format(f): float(f in found) for f in TEXT_FLAGS}


def flag_counts(flags: Iterable[Sequence[str]]) -> Counter[str]:
    """How many captions carry each flag, plus ``captions``: how many were looked at."""
    counts: Counter[str] = Counter()
    for fl in flags:
        counts["captions"] += 1
        counts.update(fl)
    return counts


def flag_rates(counts: dict[str, float]) -> dict[str, float]:
    """Each flag's share of the captions counted (``flag_counts``)."""
    n = counts.get("captions", 0)
    return {f: (counts.get(f, 0) / n if n else 0.0) for f in FLAGS}


def rates_from_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """``flag_rates`` from summed shard-stats metrics (``FLAG_METRIC`` names); empty when none were recorded (a
    run made before the monitors)."""
    prefix = FLAG_METRIC.format("")
    counts = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
    return flag_rates(counts) if counts.get("captions") else {}
