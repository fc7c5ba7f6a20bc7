"""QA-accuracy reward: exact values through the lexical answerer, compat behaviour, the tiny transformers answerer."""

from __future__ import annotations

import json

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.config import BackendConfig
from caprl_kit.rewards.base import RewardError
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.rewards.config import QARewardConfig, RewardConfig
from caprl_kit.rewards.qa import QAAccuracyReward, QAScorer
from caprl_kit.rewards.prompts import answer_prompt
from caprl_kit.schemas import MCQ

CIRCLE = MCQ(question="What color is the circle?", choices=["A) red", "B) blue", "C) green", "D) yellow"], answer="A")
SQUARE = MCQ(question="What color is the square?", choices=["A) red", "B) blue", "C) green", "D) yellow"], answer="B")
FULL = "A red circle at the left and a blue square at the right."
HALF = "A red circle at the left."


def scorer(**kw) -> QAScorer:
    return QAScorer(QARewardConfig(seed=0, **kw))


@pytest.mark.parametrize("caption, qas, mode, expected", [
    (FULL, [CIRCLE, SQUARE], "shuffle", 1.0),
    (FULL, [CIRCLE, SQUARE], "all_qa", 1.0),
    (HALF, [CIRCLE, SQUARE], "all_qa", 0.5),
    (HALF, [CIRCLE], "shuffle", 1.0),
    (HALF, [SQUARE], "shuffle", 0.0),
    ("", [CIRCLE, SQUARE], "shuffle", 0.0),
    ("A green circle.", [CIRCLE], "shuffle", 0.0),  # wrong caption, confidently wrong answer
])
def test_exact_scores_with_the_lexical_answerer(caption: str, qas: list[MCQ], mode: str, expected: float) -> None:
    out = scorer(mode=mode).score([caption], [qas])
    assert out.scores == [expected]
    assert out.details[0]["n_questions"] == (8 if mode == "shuffle" else len(qas))


def test_mixed_draws_score_the_share_of_supported_draws() -> None:
    out = scorer(qa_num=8).score([HALF], [[CIRCLE, SQUARE]])
    d = out.details[0]
    # with the caption mentioning only the circle: circle draws are right, square draws are "cannot answer"
    assert out.scores[0] == sum(d["correct"]) / 8
    assert 0 < out.scores[0] < 1
    assert d["predicted"].count("E") == 8 - sum(d["correct"])


def test_cannot_answer_label_fixed_vs_official() -> None:
    fixed = scorer().score([HALF], [[SQUARE]]).details[0]["predicted"]
    official = scorer(compat="official").score([HALF], [[SQUARE]]).details[0]["predicted"]
    assert fixed == ["E"] * 8  # next free label after A-D
    assert official == ["F"] * 8  # always F, as the official server (spec §2.2)


def test_all_answer_prompts_go_in_one_engine_call() -> None:
    engine = build_backend(BackendConfig(name="lexical"))
    calls: list[int] = []
    real = engine.generate

    def counting(requests):
        calls.append(len(requests))
        return real(requests)

    engine.generate = counting  # observe, delegate to the real engine
    QAScorer(QARewardConfig(seed=0, qa_num=8), engine).score([FULL, HALF, ""], [[CIRCLE, SQUARE]] * 3)
    assert calls == [24]


def test_trl_shape_with_json_ground_truth_and_conversational_completions() -> None:
    reward = QAAccuracyReward(QARewardConfig(seed=0))
    gt = json.dumps([CIRCLE.model_dump(), SQUARE.model_dump()])
    completions = [[{"role": "assistant", "content": FULL}], [{"role": "assistant", "content": ""}]]
    assert reward(completions, ground_truth=[gt, gt]) == [1.0, 0.0]
    assert reward([FULL], reward_model=[{"ground_truth": [CIRCLE.model_dump()], "style": "rule"}]) == [1.0]
    assert reward.__name__ == "qa_accuracy"


def test_video_qa_labels_a_period_are_accepted() -> None:
    gt = [{"question": "What color is the circle?", "choices": ["A. blue", "B. red"], "answer": "B"}]
    assert QAAccuracyReward(QARewardConfig(seed=0))([FULL], ground_truth=[gt]) == [1.0]


def test_empty_qa_list_scores_zero_and_says_so() -> None:
    out = scorer().score([FULL], [[]])
    assert out.scores == [0.0] and out.details[0]["n_questions"] == 0


def test_weighted_combination() -> None:
    cfg = RewardConfig(qa=QARewardConfig(seed=0), components=[
        {"name": "qa_accuracy", "weight": 1.0}, {"name": "length", "weight": 0.2},
        {"name": "timestamp_format", "weight": 0.2}], length={"l1": 5, "l2": 15})
    out = CaprlReward(cfg).compute(
        [FULL, "[00:00] A red circle."], ground_truth=[[CIRCLE, SQUARE], [CIRCLE]])
    # FULL: qa 1.0, 13 words -> length 0.2, no timestamps; second: qa 1.0, 4 words -> length 1.0, format 1.0
    assert out.scores == pytest.approx([1.0 + 0.2 * 0.2, 1.0 + 0.2 * 1.0 + 0.2 * 1.0])
    assert set(out.details[0]) >= {"qa_reward", "length_reward", "cap_tokens", "format_reward", "score"}


def test_cannot_answer_is_counted_only_where_it_was_offered() -> None:
    sampled = QAScorer(QARewardConfig(seed=0, qa_num=4, answerer={"name": "lexical"}))
    out = sampled.score([FULL, "A quiet empty street at night."], [[CIRCLE], [CIRCLE]])
    # the circle is described: never "cannot answer"; an unrelated caption: the lexical answerer takes the option
    assert out.details[0]["cannot_answer"] == [False] * 4 and out.details[1]["cannot_answer"] == [True] * 4
    all_qa = QAScorer(QARewardConfig(seed=0, mode="all_qa", answerer={"name": "lexical"}))
    assert all_qa.score([FULL], [[CIRCLE]]).details[0]["cannot_answer"] == []  # no option shown: nothing to count


def test_reward_details_carry_the_caption_monitors() -> None:
    cfg = RewardConfig(qa=QARewardConfig(seed=0))
    loop = "A red circle at the left . the left . the left . the left . the left ."
    chatty = [{"role": "assistant", "content": "The image shows a red circle. This description captures it."}]
    out = CaprlReward(cfg).compute([FULL, loop, chatty], ground_truth=[[CIRCLE]] * 3)
    flags = [{k: v for k, v in d.items() if k.startswith("monitor_")} for d in out.details]
    assert flags[0] == {"monitor_repetitive": 0.0, "monitor_boilerplate_opener": 0.0, "monitor_meta_ending": 0.0,
                        "monitor_empty": 0.0}
    assert flags[1]["monitor_repetitive"] == 1.0
    assert flags[2]["monitor_boilerplate_opener"] == flags[2]["monitor_meta_ending"] == 1.0
    assert out.scores[0] == 1.0  # the monitors do not change the reward


def test_official_video_prompt_keeps_the_indentation_quirk() -> None:
    ours = answer_prompt("cap", "Q?", task="video")
    official = answer_prompt("cap", "Q?", task="video", compat="official")
    assert "Pay close attention to timestamps" in ours
    assert all(line.startswith("        ") for line in official.split("\n"))
    assert answer_prompt("cap", "Q?", task="image", compat="official") == answer_prompt("cap", "Q?")


def test_engine_failure_raises_instead_of_zero(tiny_models) -> None:
    qa = QAScorer(QARewardConfig(seed=0, answerer={"name": "transformers", "model": str(tiny_models["captioner"])}))
    # a 1-token budget is fine; an image-less VLM answers text too — so break the engine for real: no model
    qa.engine.model = None
    with pytest.raises(RewardError, match="answerer failed"):
        qa.score([FULL], [[CIRCLE]])


def test_tiny_transformers_answerer_runs(tiny_models) -> None:
    cfg = QARewardConfig(seed=0, qa_num=4, answerer={"name": "transformers", "model": str(tiny_models["answerer"])})
    out = QAScorer(cfg).score([FULL, HALF], [[CIRCLE, SQUARE], [CIRCLE]])
    assert len(out.scores) == 2 and all(0.0 <= s <= 1.0 for s in out.scores)
    assert all(d["n_questions"] == 4 and len(d["predicted"]) == 4 for d in out.details)
    assert all(s * 4 == sum(d["correct"]) for s, d in zip(out.scores, out.details))
