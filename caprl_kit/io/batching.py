"""Loaded media items and adaptive batching by estimated prompt tokens (shared by annotate and curate)."""

from __future__ import annotations

from dataclasses import dataclass

from caprl_kit.errors import MediaError
from caprl_kit.io.media import LoadedImage, VideoClip
from caprl_kit.io.readers import InputItem

TEXT_TOKENS = 48  # rough prompt-text share of a request, for batching estimates


@dataclass
class Loaded:
    item: InputItem
    media: LoadedImage | VideoClip | None = None
    raw: bytes | None = None
    error: MediaError | None = None

    @property
    def est_tokens(self) -> int:
        if isinstance(self.media, LoadedImage):
            return TEXT_TOKENS + (self.media.width // 28) * (self.media.height // 28)
        if isinstance(self.media, VideoClip):
            return TEXT_TOKENS + (len(self.media.frames) // 2) * (self.media.width // 28) * (self.media.height // 28)
        return TEXT_TOKENS


def cut_batches(loaded: list[Loaded], max_items: int, max_tokens: int) -> list[list[int]]:
    """Indices of ``loaded`` grouped into batches: sorted by size, each within both caps (an oversized item
    gets a batch of its own)."""
    return batches_by_cost([ld.est_tokens for ld in loaded], max_items, max_tokens)


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
