"""Decoupled multi-reward normalisation (GDPO, ``algorithm.reward_normalization: per_term``): why it exists, shown
with verl's own advantage estimators, and how caprl hands the terms to each trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.rewards.config import RewardConfig

# two groups of two completions, two binary terms (a, b): in group 1 the better completion satisfies a only, in
# group 2 it satisfies a and b. Summed, both groups are (0, 1) vs (0, 2) -> the same z-scores.
TERMS = {"a": [0.0, 1.0, 0.0, 1.0], "b": [0.0, 0.0, 0.0, 1.0]}
GROUPS = np.array(["g1", "g1", "g2", "g2"], dtype=object)
LENGTH = 3


def _token_level(scores: list[float]) -> torch.Tensor:
    t = torch.zeros(len(scores), LENGTH)
    t[:, LENGTH - 1] = torch.tensor(scores)
    return t


def test_summed_rewards_collapse_advantages_per_term_normalisation_does_not() -> None:
    from verl.trainer.ppo.core_algos import compute_gdpo_outcome_advantage, compute_grpo_outcome_advantage

    mask = torch.ones(4, LENGTH)
    summed = [a + b for a, b in zip(TERMS["a"], TERMS["b"])]
    grpo, _ = compute_grpo_outcome_advantage(_token_level(summed), mask, GROUPS)
    # the better completion of each group gets the same advantage, though group 2's satisfies both terms
    assert grpo[1, 0] == pytest.approx(grpo[3, 0].item()) and grpo[1, 0] > 0
    batch = {"prompts": torch.zeros(4, 2, dtype=torch.long), "attention_mask": torch.ones(4, 2 + LENGTH, dtype=torch.long)}
    gdpo, _ = compute_gdpo_outcome_advantage(
        _token_level(summed), mask, GROUPS, config={"gdpo_reward_keys": ["a", "b"]},
        non_tensor_batch={k: np.array(v) for k, v in TERMS.items()}, batch=batch)
    assert gdpo[3, 0] > gdpo[1, 0] > 0  # per term, satisfying b too is worth more
    assert gdpo[2, 0] < gdpo[0, 0] < 0


def _file_term(tmp_path, body: str) -> str:
    path = tmp_path / "terms.py"
    path.write_text(body)
    return f"file:{path}"


def test_per_term_functions_match_the_weighted_sum_and_its_details(tmp_path) -> None:
    """TRL gets one reward function per term, named after it, with the raw term scores and the weights apart;
    called in order they leave the same details (and weighted score) as the summed reward."""
    spec = _file_term(tmp_path, "def chars(completions, **kw):\n    return [len(set(c)) / 10 for c in completions]\n"
                                 "def words(completions, **kw):\n    return [len(c.split()) for c in completions]\n")
    cfg = RewardConfig(components=[{"name": f"{spec}:chars", "weight": 1.0},
                                   {"name": f"{spec}:words", "weight": 0.5}])
    captions = ["a red circle", "a red circle and a blue square at the right"]
    reward = CaprlReward(cfg)
    summed = reward.compute(captions)
    funcs = reward.per_term()
    assert [f.__name__ for f in funcs] == [f"{spec}:chars", f"{spec}:words"] and reward.weights == [1.0, 0.5]
    per_term = [f(captions) for f in funcs]
    assert per_term[1] == [3.0, 10.0]  # raw: the trainer weights them itself
    assert [d["score"] for d in reward.last_details] == pytest.approx(summed.scores)
    assert reward.last_details == summed.details


def test_grpo_args_ask_trl_for_normalize_then_sum() -> None:
    from caprl_kit.train.config import TrainConfig
    from caprl_kit.train.trl_grpo import grpo_args

    base = {"policy": "p", "data": {"train_files": ["t.parquet"]}, "trl": {"report_to": []}, "output_dir": "o"}
    summed = grpo_args(TrainConfig.model_validate(base))
    assert summed.multi_objective_aggregation == "sum_then_normalize" and summed.reward_weights is None
    per_term = grpo_args(TrainConfig.model_validate({**base, "algorithm": {"reward_normalization": "per_term"}}),
                         term_weights=[1.0, 0.2])
    assert per_term.multi_objective_aggregation == "normalize_then_sum" and per_term.reward_weights == [1.0, 0.2]


def test_verl_composes_gdpo_through_its_own_config() -> None:
    from caprl_kit.config import load_config
    from caprl_kit.train.verl import compose

    v = compose(load_config("train/grpo_qwen25vl3b_verl", ["algorithm.reward_normalization=per_term",
                                                            "reward.components=[{name: qa_accuracy}, "
                                                            "{name: length, weight: 0.2}]"]))
    assert v.algorithm.adv_estimator == "gdpo"
    assert list(v.algorithm.gdpo_reward_keys) == ["served_reward", "length_reward"]
    assert list(v.algorithm.gdpo_reward_weights) == [1.0, 0.2]
    plain = compose(load_config("train/grpo_qwen25vl3b_verl"))
    assert plain.algorithm.adv_estimator == "grpo" and "gdpo_reward_keys" not in plain.algorithm
