"""The weighted CapRL reward: ``total = sum(weight_i * term_i)`` over the configured terms (spec §2.1, CapRL++:
qa_accuracy + 0.2 timestamp_format (video) + 0.2 length), with every term's details kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caprl_kit.backends.base import Backend
from caprl_kit.monitors import flag_values
from caprl_kit.rewards.base import RewardOutput, completion_text
from caprl_kit.rewards.config import RewardConfig
from caprl_kit.rewards.registry import REWARDS


def build_term(name: str, cfg: RewardConfig, engine: Backend | None = None, tokenizer: Any = None) -> Any:
    """A registered term built from its own config block (``config_key``) and the shared parts it asks for
    (``shares``); a user function loaded from ``file:path.py:fn`` is used as it is."""
    cls = REWARDS.get(name)
    key = getattr(cls, "config_key", None)
    if key is None:
        return cls
    available = {"engine": engine, "tokenizer": tokenizer}
    return cls(getattr(cfg, key), **{k: available[k] for k in cls.shares})


class CaprlReward:
    """``reward(completions, **columns) -> list[float]`` (TRL's shape) over the weighted terms; ``compute`` also
    returns per-term details (``qa_reward``, ``length_reward``, ``cap_tokens``, ``format_reward`` ...)."""

    __name__ = "caprl_reward"

    def __init__(self, cfg: RewardConfig | None = None, engine: Backend | None = None, tokenizer: Any = None):
        self.cfg = cfg or RewardConfig()
        self.terms = [
            (c.name, c.weight, build_term(c.name, self.cfg, engine, tokenizer))
            for c in self.cfg.components
            if c.weight != 0.0
        ]
        self.last_details: list[dict[str, Any]] = []

    def compute(self, completions: Sequence[Any], **columns: Any) -> RewardOutput:
        totals = [0.0] * len(completions)
        details: list[dict[str, Any]] = [{} for _ in completions]
        for name, weight, term in self.terms:
            if hasattr(term, "compute"):
                out = term.compute(completions, **columns)
            else:
                out = RewardOutput([float(x) for x in term(completions, **columns)])
            for i, s in enumerate(out.scores):
                totals[i] += weight * s
                if out.details:
                    details[i].update(out.details[i])
                else:
                    details[i][f"{name}_reward"] = s
        for d, t, c in zip(details, totals, completions):
            d["score"] = t
            d.update(flag_values(completion_text(c)))  # caption hygiene, logged beside the reward terms
        self.last_details = details
        return RewardOutput(totals, details)

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores
