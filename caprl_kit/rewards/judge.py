"""``vl_judge``: the LVLM-as-a-judge baseline (spec §2.5; not CapRL's method). The judge sees the video (or
image) and the caption and returns JSON sub-scores; score = 0.30 factuality + 0.25 temporal + 0.25 coverage +
0.20 hallucination (1 = none), each clipped to [0, 1]. Unparseable judge output scores 0 and is flagged."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Backend, Request, SamplingParams
from caprl_kit.rewards.base import RewardError, RewardOutput, completion_text
from caprl_kit.rewards.config import JudgeRewardConfig

WEIGHTS = {"factuality": 0.30, "temporal_alignment": 0.25, "coverage": 0.25, "hallucination": 0.20}
ALIASES = {
    "factuality": "factuality",
    "fact": "factuality",
    "temporal_alignment": "temporal_alignment",
    "temporal": "temporal_alignment",
    "coverage": "coverage",
    "hallucination": "hallucination",
    "hallucination_penalty": "hallucination",
}

JUDGE_PROMPT = """You are judging a caption of the attached {media}. Score it on four criteria, each between 0 and 1:
- factuality: is everything the caption states true of the {media}?
- temporal_alignment: are events and their timestamps in the right order and at the right times?
- coverage: does it describe the important content?
- hallucination: 1 if it invents nothing, lower the more it invents.
Answer with JSON only, for example {{"factuality": 0.8, "temporal_alignment": 0.7, "coverage": 0.6, "hallucination": 1.0, "reason": "..."}}.

Caption: {caption}"""


def parse_judge_output(text: str) -> dict[str, float] | None:
    """Strip code fences and load the JSON; else load the outermost {...}; None when neither works or no
    criterion is present. Keys are matched loosely, values clipped to [0, 1]."""
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip(), flags=re.IGNORECASE)
    data: Any = None
    for candidate in (body, body[body.find("{") : body.rfind("}") + 1] if "{" in body and "}" in body else ""):
        try:
            data = json.loads(candidate)
            break
        except (json.JSONDecodeError, ValueError):
            continue
    if not isinstance(data, dict):
        return None
    out: dict[str, float] = {}
    for key, value in data.items():
        name = ALIASES.get(str(key).strip().lower().replace(" ", "_"))
        if name is None:
            continue
        try:
            out[name] = min(1.0, max(0.0, float(value)))
        except (TypeError, ValueError):
            continue
    return out or None


def judge_score(parsed: dict[str, float] | None) -> float:
    """
    >>> judge_score({"factuality": 1, "temporal_alignment": 1, "coverage": 1, "hallucination": 1})
    1.0
    >>> judge_score(None)
    0.0
    """
    if not parsed:
        return 0.0
    return round(sum(w * parsed.get(k, 0.0) for k, w in WEIGHTS.items()), 6)


class VLJudgeReward:
    __name__ = "vl_judge"

    config_key = "vl_judge"  #: its block in RewardConfig
    shares: tuple[str, ...] = ()  #: what it takes from the caller (the answerer engine, the tokenizer)

    def __init__(self, cfg: JudgeRewardConfig | None = None, engine: Backend | None = None, **_: Any):
        self.cfg = cfg or JudgeRewardConfig()
        self.engine = engine or build_backend(self.cfg.judge)
        self.sampling = SamplingParams.from_config(self.cfg.sampling)

    def compute(
        self,
        completions: Sequence[Any],
        videos: Sequence[Any] | None = None,
        images: Sequence[Any] | None = None,
        **_: Any,
    ) -> RewardOutput:
        requests = []
        for i, c in enumerate(completions):
            video = _first(videos[i]) if videos is not None else None
            image = _first(images[i]) if images is not None else None
            media = "video" if video is not None else "image"
            prompt = JUDGE_PROMPT.format(media=media, caption=completion_text(c))
            requests.append(
                Request.user(
                    prompt,
                    videos=[video] if video is not None else [],
                    images=[image] if image is not None else [],
                    sampling=self.sampling,
                )
            )
        responses = self.engine.generate(requests)
        failed = [r for r in responses if not r.ok]
        if failed:
            raise RewardError(f"judge failed on {len(failed)} of {len(responses)} captions: {failed[0].error}")
        scores, details = [], []
        for r in responses:
            parsed = parse_judge_output(r.texts[0])
            scores.append(judge_score(parsed))
            details.append({"judge_reward": scores[-1], "judge_parse_error": float(parsed is None)})
        return RewardOutput(scores, details)

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    if isinstance(value, dict):
        return value.get("video") or value.get("image") or value.get("path")
    return value
