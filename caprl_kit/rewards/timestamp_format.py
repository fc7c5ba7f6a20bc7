"""Timestamp-format reward for video captions (spec §2.4).

Timestamps are ``[mm:ss]`` or ``[mm:ss - mm:ss]``; one is valid when seconds are 0-59, minutes <= max_minute and,
for a range, end >= start. No timestamp (or an empty caption) scores 0.

- v2 (default): 0.5 * valid/all + 0.5 * chronological, where chronological = 1 when at least one timestamp is
  valid and the valid start times never decrease in caption order.
- legacy: validity = valid/all, coverage = min(1, valid/min_brackets), order = 1 with fewer than 2 valid stamps or
  non-decreasing starts; 0.45*coverage*validity + 0.25*validity + 0.30*order*validity, clipped to [0, 1].
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from caprl_kit.rewards.base import RewardOutput, completion_text
from caprl_kit.rewards.config import TimestampFormatConfig

TIMESTAMP_RE = re.compile(r"\[(\d{1,3}):(\d{2})(?:\s*-\s*(\d{1,3}):(\d{2}))?\]")


def _stamps(caption: str, max_minute: int) -> tuple[int, list[int]]:
    """(number of timestamps, start seconds of the valid ones in caption order)."""
    found = TIMESTAMP_RE.findall(caption or "")
    starts = []
    for m1, s1, m2, s2 in found:
        mm1, ss1 = int(m1), int(s1)
        ok = ss1 <= 59 and mm1 <= max_minute
        if m2:
            mm2, ss2 = int(m2), int(s2)
            ok = ok and ss2 <= 59 and mm2 <= max_minute and mm2 * 60 + ss2 >= mm1 * 60 + ss1
        if ok:
            starts.append(mm1 * 60 + ss1)
    return len(found), starts


def timestamp_format_score(caption: str, version: str = "v2", max_minute: int = 599, min_brackets: int = 3) -> float:
    """
    >>> timestamp_format_score("[00:00 - 00:05] a man walks. [00:06] he sits.")
    1.0
    >>> timestamp_format_score("[00:10] late [00:02] early")
    0.5
    >>> timestamp_format_score("[00:75] bad [00:02] ok")
    0.75
    >>> timestamp_format_score("no stamps at all")
    0.0
    """
    n_all, starts = _stamps(caption, max_minute)
    if n_all == 0:
        return 0.0
    validity = len(starts) / n_all
    ordered = all(a <= b for a, b in itertools.pairwise(starts))
    if version == "legacy":
        coverage = min(1.0, len(starts) / min_brackets)
        order = 1.0 if len(starts) < 2 or ordered else 0.0
        return max(0.0, min(1.0, 0.45 * coverage * validity + 0.25 * validity + 0.30 * order * validity))
    chrono = 1.0 if starts and ordered else 0.0
    return 0.5 * validity + 0.5 * chrono


class TimestampFormatReward:
    __name__ = "timestamp_format"

    config_key = "timestamp_format"  #: its block in RewardConfig
    shares: tuple[str, ...] = ()  #: what it takes from the caller (the answerer engine, the tokenizer)

    def __init__(self, cfg: TimestampFormatConfig | None = None, **_: Any):
        self.cfg = cfg or TimestampFormatConfig()

    def compute(self, completions: Sequence[Any], **_: Any) -> RewardOutput:
        c = self.cfg
        scores = [
            timestamp_format_score(completion_text(x), c.version, c.max_minute, c.min_brackets) for x in completions
        ]
        return RewardOutput(scores, [{"format_reward": s} for s in scores])

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores
