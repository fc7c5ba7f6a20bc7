"""Length reward (CapRL++, spec §2.3): 1 up to L1 tokens, linear down to 0 at L2, 0 beyond (a step at L1 when
L2 <= L1). Tokens are counted with the policy's tokenizer (``add_special_tokens=False``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from caprl_kit.rewards.base import RewardOutput, completion_text
from caprl_kit.rewards.config import LengthRewardConfig


def length_score(n_tokens: int, l1: int, l2: int) -> float:
    """
    >>> [length_score(n, 10, 20) for n in (5, 10, 15, 20, 25)]
    [1.0, 1.0, 0.5, 0.0, 0.0]
    >>> length_score(11, 10, 10)
    0.0
    """
    if n_tokens <= l1:
        return 1.0
    if l2 <= l1 or n_tokens > l2:
        return 0.0
    return 1.0 - (n_tokens - l1) / (l2 - l1)


class LengthReward:
    __name__ = "length"

    config_key = "length"  #: its block in RewardConfig
    shares: tuple[str, ...] = ("tokenizer",)  #: what it takes from the caller (the answerer engine, the tokenizer)

    def __init__(self, cfg: LengthRewardConfig | None = None, tokenizer: Any = None, **_: Any):
        self.cfg = cfg or LengthRewardConfig()
        self._tokenizer = tokenizer

    @cached_property
    def tokenizer(self) -> Any:
        if self._tokenizer is not None or self.cfg.tokenizer is None:
            return self._tokenizer
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.cfg.tokenizer)

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def compute(self, completions: Sequence[Any], **_: Any) -> RewardOutput:
        counts = [self.count(completion_text(c)) for c in completions]
        scores = [length_score(n, self.cfg.l1, self.cfg.l2) for n in counts]
        return RewardOutput(scores, [{"length_reward": s, "cap_tokens": n} for s, n in zip(scores, counts)])

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores
