"""Reward server bodies: the official CapRL ``/get_reward`` protocol (spec §2.6)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from caprl_kit.schemas._base import Artifact


class RewardRequest(Artifact):
    schema_name = "reward_request"
    producer = "verl/OpenRLHF reward clients (official reward_fn.py), caprl train"
    consumer = "caprl serve-reward POST /get_reward"
    file_pattern = "HTTP body"
    example = {
        "prompts": [["A red car parked beside a tree.", [["What colour is the car?\n   - A) Red\n   - B) Blue", "A"]]]],
        "query": [],
        "labels": [],
        "score_mode": "qa",
    }

    prompts: list[list[Any]] = Field(
        description="One [caption, [[question_full, answer_letter], ...]] pair per caption",
        json_schema_extra={"arrow": "json"},
    )
    query: list[Any] = Field(
        default_factory=list, description="Unused; kept for the official clients", json_schema_extra={"arrow": "json"}
    )
    labels: list[Any] = Field(
        default_factory=list, description="Unused; kept for the official clients", json_schema_extra={"arrow": "json"}
    )
    score_mode: str | None = Field(None, description="qa or vl_judge; the server's default when null")


class RewardResponse(Artifact):
    schema_name = "reward_response"
    producer = "caprl serve-reward POST /get_reward"
    consumer = "verl/OpenRLHF reward clients"
    file_pattern = "HTTP body"
    example = {"rewards": [0.75], "qa_rewards": [0.75], "format_rewards": [0.0]}

    rewards: list[float] = Field(description="Total reward per caption")
    qa_rewards: list[float] | None = Field(None, description="QA-accuracy term per caption")
    format_rewards: list[float] | None = Field(None, description="Timestamp-format term per caption (video)")
    judge_rewards: list[float] | None = Field(None, description="Judge score per caption (vl_judge mode)")
    error: str | None = Field(None, description="Set on failure responses")
