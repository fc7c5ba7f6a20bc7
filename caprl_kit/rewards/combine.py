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


def reward_engines(cfg: RewardConfig, key: str) -> dict[str, Any]:
    """The engines a ``CaprlReward`` over ``cfg`` builds, by config key under ``key`` (checked before a run; what a
    worker asks of the cluster: GPUs): the in-process answerer, the judge and the faithfulness verifier (and llm
    splitter) of the weighted terms."""
    weighted = {c.name for c in cfg.components if c.weight}
    engines = {}
    if "qa_accuracy" in weighted and cfg.qa.service is None:
        engines[f"{key}.qa.answerer"] = cfg.qa.answerer
    if "vl_judge" in weighted:
        engines[f"{key}.vl_judge.judge"] = cfg.vl_judge.judge
    if "faithfulness" in weighted:
        engines[f"{key}.faithfulness.verifier.backend"] = cfg.faithfulness.verifier.backend
        if cfg.faithfulness.splitter.backend is not None:
            engines[f"{key}.faithfulness.splitter.backend"] = cfg.faithfulness.splitter.backend
    return engines


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

    @property
    def weights(self) -> list[float]:
        return [weight for _, weight, _ in self.terms]

    def compute(self, completions: Sequence[Any], **columns: Any) -> RewardOutput:
        for k in range(len(self.terms)):
            self._term(k, completions, **columns)
        return RewardOutput([d["score"] for d in self.last_details], self.last_details)

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores

    def per_term(self) -> list[_Term]:
        """One reward function per term (TRL's shape, named after the term), for trainers that normalise each term
        on its own (GDPO) and weight them themselves (``weights``); called in order on the same completions, they
        leave the same ``last_details`` as ``compute``."""
        return [_Term(self, k, name) for k, (name, _, _) in enumerate(self.terms)]

    def _term(self, k: int, completions: Sequence[Any], **columns: Any) -> list[float]:
        """The ``k``-th term's raw scores; its details join ``last_details`` (the first term starts them afresh) and
        the weighted total so far is each caption's ``score``."""
        name, weight, term = self.terms[k]
        if k == 0:
            self.last_details = [{"score": 0.0, **flag_values(completion_text(c))} for c in completions]
        if hasattr(term, "compute"):
            out = term.compute(completions, **columns)
        else:
            out = RewardOutput([float(x) for x in term(completions, **columns)])
        for i, s in enumerate(out.scores):
            d = self.last_details[i]
            total = d["score"] + weight * s
            d.update(out.details[i] if out.details else {f"{name}_reward": s})
            d["score"] = total
        return list(out.scores)


class _Term:
    """One term of a ``CaprlReward`` as a TRL reward function; TRL names its logs after ``__name__``."""

    def __init__(self, reward: CaprlReward, k: int, name: str):
        self.reward, self.k, self.__name__ = reward, k, name

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.reward._term(self.k, completions, **columns)


#: one item's candidates for ``score_groups``: its captions, its ground truth (MCQs) and its media (for the terms
#: that look at it)
Group = tuple[list[str], Any, Any]


def score_groups(reward: CaprlReward, groups: list[Group]) -> list[list[dict[str, Any]] | str]:
    """Each group's captions scored in one call: per group, each caption's details with its weighted ``score``, or
    why the reward failed for that group. A call that fails is retried group by group, so one bad QA list fails
    only its own item; a reward service that no replica answers (``RewardUnavailable``) raises at once (retrying
    item by item would only wait for the same timeouts)."""
    from caprl_kit.rewards.client import RewardUnavailable

    caps = [c for cs, _, _ in groups for c in cs]
    gts = [gt for cs, gt, _ in groups for _ in cs]
    media = [m for cs, _, m in groups for _ in cs]
    try:
        out = reward.compute(caps, ground_truth=gts, images=media)
    except RewardUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - isolated below, group by group
        if len(groups) == 1:
            return [f"{type(exc).__name__}: {exc}"]
        return [r for g in groups for r in score_groups(reward, [g])]
    result: list[list[dict[str, Any]] | str] = []
    i = 0
    for cs, _, _ in groups:
        result.append([{**d, "score": s} for d, s in zip(out.details[i : i + len(cs)], out.scores[i : i + len(cs)])])
        i += len(cs)
    return result
