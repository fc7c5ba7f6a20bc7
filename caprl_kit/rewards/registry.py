"""Reward-term registry (lazy): each entry builds a callable ``(completions, **columns) -> RewardOutput``."""

from caprl_kit.registry import Registry

REWARDS = Registry("reward")
REWARDS.register("qa_accuracy", target="caprl_kit.rewards.qa:QAAccuracyReward")
REWARDS.register("length", target="caprl_kit.rewards.length:LengthReward")
REWARDS.register("timestamp_format", target="caprl_kit.rewards.timestamp_format:TimestampFormatReward")
REWARDS.register("vl_judge", target="caprl_kit.rewards.judge:VLJudgeReward")
REWARDS.register("faithfulness", target="caprl_kit.rewards.faithfulness:FaithfulnessReward")
