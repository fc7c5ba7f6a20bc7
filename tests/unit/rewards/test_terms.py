"""Length, timestamp-format and judge-parsing terms: exact values."""

from __future__ import annotations

import pytest

from caprl_kit.rewards.config import LengthRewardConfig
from caprl_kit.rewards.judge import judge_score, parse_judge_output
from caprl_kit.rewards.length import LengthReward, length_score
from caprl_kit.rewards.timestamp_format import timestamp_format_score


@pytest.mark.parametrize("n, l1, l2, expected", [
    (0, 2048, 3072, 1.0), (2048, 2048, 3072, 1.0), (2560, 2048, 3072, 0.5), (3072, 2048, 3072, 0.0),
    (5000, 2048, 3072, 0.0), (2049, 2048, 2048, 0.0), (2048, 2048, 1000, 1.0), (2049, 2048, 1000, 0.0),
])
def test_length_score(n: int, l1: int, l2: int, expected: float) -> None:
    assert length_score(n, l1, l2) == pytest.approx(expected)


def test_length_counts_with_the_policy_tokenizer(tiny_models) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["captioner"])
    text = "A red circle at the left and a blue square."
    n = len(tok.encode(text, add_special_tokens=False))
    r = LengthReward(LengthRewardConfig(l1=n - 2, l2=n + 2, tokenizer=str(tiny_models["captioner"])))
    out = r.compute([text, [{"role": "assistant", "content": text}]])
    assert out.scores == [0.5, 0.5] and out.details[0]["cap_tokens"] == n


@pytest.mark.parametrize("caption, v2, legacy", [
    ("[00:00 - 00:05] a man walks. [00:06] he sits. [00:09 - 00:12] he stands.", 1.0, 1.0),
    ("[00:10] late [00:02] early", 0.5, 0.45 * (2 / 3) + 0.25),
    ("[00:75] bad [00:02] ok", 0.75, 0.5 * (0.45 / 3 + 0.25 + 0.30)),
    ("[00:05 - 00:02] reversed range only", 0.0, 0.0),
    ("[10:00] one stamp", 1.0, 0.45 / 3 + 0.25 + 0.30),
    ("[600:00] minute too large", 0.0, 0.0),
    ("[599:59] largest ok", 1.0, 0.45 / 3 + 0.25 + 0.30),
    ("no stamps at all", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("[0:05] one-digit minute [00:07]", 1.0, 0.45 * (2 / 3) + 0.25 + 0.30),
])
def test_timestamp_format_versions(caption: str, v2: float, legacy: float) -> None:
    assert timestamp_format_score(caption) == pytest.approx(v2)
    assert timestamp_format_score(caption, version="legacy") == pytest.approx(legacy)


@pytest.mark.parametrize("text, expected", [
    ('{"factuality": 1, "temporal_alignment": 1, "coverage": 1, "hallucination": 1, "reason": "ok"}', 1.0),
    ('```json\n{"factuality": 0.5, "temporal_alignment": 0.5, "coverage": 0.5, "hallucination": 0.5}\n```', 0.5),
    ('Sure! {"factuality": 1.0, "coverage": 1.0} Hope it helps.', 0.55),
    ('{"Factuality": 2, "Temporal Alignment": -1, "coverage": "0.4", "hallucination_penalty": 1}', 0.3 + 0.1 + 0.2),
    ("not json at all", 0.0),
    ('{"reason": "no scores"}', 0.0),
    ('{"factuality": 0.8,', 0.0),
])
def test_judge_parsing(text: str, expected: float) -> None:
    assert judge_score(parse_judge_output(text)) == pytest.approx(expected)
