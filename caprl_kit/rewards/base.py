"""Shared pieces of reward terms: completion text extraction, ground-truth decoding, the output type."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.schemas.curate import MCQ


class RewardError(CaprlError):
    """A reward could not be computed (e.g. the answerer engine failed). Never turned into silent zeros."""


@dataclass
class RewardOutput:
    scores: list[float]
    details: list[dict[str, Any]] = field(default_factory=list)


def completion_text(completion: Any) -> str:
    """TRL passes strings or conversational completions ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return str(completion)


def decode_ground_truth(gt: Any) -> list[MCQ]:
    """QA lists as stored anywhere: a JSON string, a list of dicts/MCQs, each through the strict validator (labels
    normalised: "A. x" -> "A) x"; an answer given as option text -> its label). A bad MCQ raises ``InvalidMCQ``
    naming its index (``ground_truth[2]: ...``)."""
    if gt is None:
        return []
    if isinstance(gt, str):
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError as exc:
            raise RewardError(f"ground_truth is not valid JSON: {exc}") from None
    if isinstance(gt, dict) and "ground_truth" in gt:
        gt = gt["ground_truth"]
    if hasattr(gt, "tolist"):
        gt = gt.tolist()
    if not isinstance(gt, (list, tuple)):
        raise RewardError(f"ground_truth must be a list of {{question, choices, answer}}, got {type(gt).__name__}")
    return [validate_mcq(q, f"ground_truth[{j}]") for j, q in enumerate(gt)]
