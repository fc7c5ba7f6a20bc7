"""Loaded media items, and batches cut by estimated prompt tokens (``backends.base.estimate_tokens`` gives the costs)."""

from __future__ import annotations

from dataclasses import dataclass

from caprl_kit.errors import MediaError
from caprl_kit.io.media import LoadedImage, VideoClip
from caprl_kit.io.readers import InputItem
from caprl_kit.io.windows import WindowedVideo


@dataclass
class Loaded:
    item: InputItem
    media: LoadedImage | VideoClip | WindowedVideo | None = None
    raw: bytes | None = None
    error: MediaError | None = None


def batches_by_cost(costs: list[int], max_items: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches: sorted by cost, each within both caps (an oversized one alone)."""
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        t = costs[i]
        if current and (len(current) >= max_items or tokens + t > max_tokens):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += t
    if current:
        batches.append(current)
    return batches
