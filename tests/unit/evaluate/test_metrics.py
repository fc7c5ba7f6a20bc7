"""Prism scorers: exact expected scores (boxed/unboxed, numbers with units/percent/commas, MCQ letters, ANLS edges,
both compat quirks)."""

from __future__ import annotations

import pytest

from caprl_kit.evaluate.metrics import (
    anls, extract_answer, relaxed_correctness, score, scorer_for, to_float, verify_chart, verify_info, verify_math,
    verify_mcq,
)

OFFICIAL_WRAP = "<think>reasoning</think> <answer>The result is \\boxed{{{}}}.</answer>"

EXTRACT = [
    ("\\boxed{42}", "fixed", "42"),
    ("so the answer is \\boxed{\\frac{1}{2}} indeed", "fixed", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "fixed", "2"),
    ("\\boxed{a{b}c}", "fixed", "a{b}c"),
    ("<answer>Paris</answer>", "fixed", "Paris"),
    ("The final answer is 17.", "fixed", "17"),
    ("Answer: B", "fixed", "B"),
    ("  plain  ", "fixed", "plain"),
    ("", "fixed", None),
    (OFFICIAL_WRAP.format("7"), "official", "7"),
    ("\\boxed{7}", "official", None),  # official needs the </think> <answer> wrapper
    # the official pattern's greedy (.*) spans from the first \boxed{ to the last } before </answer>
    ("<think>a</think> <answer>\\boxed{1}</answer> <think>b</think> <answer>\\boxed{2}</answer>", "official",
     "1}</answer> <think>b</think> <answer>\\boxed{2"),
]


@pytest.mark.parametrize("text, compat, expected", EXTRACT)
def test_extract_answer(text: str, compat: str, expected: str | None) -> None:
    assert extract_answer(text, compat) == expected


MATH = [
    ("42", "42", 1.0), ("42.0", "42", 1.0), ("\\frac{1}{2}", "0.5", 1.0), ("1/2", "\\frac{1}{2}", 1.0),
    ("43", "42", 0.0), ("x^2", "x^{2}", 1.0), ("B", "B", 1.0), ("C", "B", 0.0), (None, "42", 0.0),
    ("\\sqrt{4}", "2", 1.0), ("3.5%", "0.035", 1.0),
    ("anything", "", 0.0),  # an unparseable (empty) gold: fixed compares strings
]


@pytest.mark.parametrize("pred, gold, expected", MATH)
def test_verify_math(pred, gold, expected) -> None:
    assert verify_math(pred, gold) == expected


def test_official_quirk_unparseable_gold_scores_one() -> None:
    assert verify_math("anything", "", "official") == 1.0
    assert verify_math(None, "", "official") == 1.0
    assert verify_math("anything", "") == 0.0


NUMBERS = [("42", 42.0), ("3.5%", 0.035), ("1,234", 1234.0), ("$5", 5.0), ("42 kg", 42.0), ("-7.25", -7.25),
           ("12.5 %", 0.125), ("abc", None), ("1,2", None)]


@pytest.mark.parametrize("text, expected", NUMBERS)
def test_to_float_fixed(text: str, expected: float | None) -> None:
    assert to_float(text) == (pytest.approx(expected) if expected is not None else None)


def test_to_float_official_is_vlmevalkit() -> None:
    assert to_float("3.5%", "official") == pytest.approx(0.035)
    assert to_float("1,234", "official") is None and to_float("42 kg", "official") is None


RELAXED = [
    ("100", "104", "fixed", 1.0), ("100", "105", "fixed", 1.0), ("100", "105.2", "fixed", 0.0),
    ("100", "95.1", "fixed", 1.0), ("0.42", "42", "fixed", 1.0), ("42", "0.42", "fixed", 1.0),
    ("0", "0", "fixed", 1.0), ("0", "0.01", "fixed", 0.0), ("Yes", "yes", "fixed", 1.0), ("Yes", "no", "fixed", 0.0),
    ("1,234", "1234", "fixed", 1.0), ("1,234", "1234", "official", 0.0),
    # quirk 2: the official error is relative to the prediction
    ("100", "105.2", "official", 1.0),  # 5.2/105.2 = 4.9% -> accepted
    ("100", "95.1", "official", 0.0),  # 4.9/95.1 = 5.2% -> rejected
]


@pytest.mark.parametrize("target, pred, compat, expected", RELAXED)
def test_relaxed_correctness(target: str, pred: str, compat: str, expected: float) -> None:
    assert relaxed_correctness(target, pred, compat) == expected


ANLS = [
    ("hello world", "hello world", 1.0), ("Hello  World", "hello world", 1.0), ("hello wrld", "hello world", 10 / 11),
    ("abcd", "abxy", 0.5),  # exactly at the 0.5 threshold: kept
    ("abcde", "abxyz", 0.0),  # 0.4 < 0.5: zero
    ("", "", 1.0), ("cat", ["dog", "cat"], 1.0),
]


@pytest.mark.parametrize("pred, gold, expected", ANLS)
def test_anls(pred, gold, expected) -> None:
    assert anls(pred, gold) == pytest.approx(expected)


def test_chart_and_info_take_the_max_of_their_scorers() -> None:
    assert verify_chart("41.5", "42") == 1.0  # relaxed
    assert verify_chart("\\frac{1}{2}", "0.5") == 1.0  # math_verify
    assert verify_chart("Blue line", "blue line") == 1.0  # exact string, case-insensitive
    assert verify_chart("Blue lines", "blue line") == 0.0
    assert verify_info("Blue lines", "blue line") == pytest.approx(1 - 1 / 10)  # ANLS
    assert verify_chart(None, "42") == 0.0


MCQ = [
    ("B", "B", "fixed", 1.0), ("(B)", "B", "fixed", 1.0), ("The answer is C.", "C", "fixed", 1.0),
    ("B. red", "B", "fixed", 1.0), ("A", "B", "fixed", 0.0), (None, "B", "fixed", 0.0),
    ("B", "B", "official", 1.0), ("A", "B", "official", 0.0),
]


@pytest.mark.parametrize("pred, gold, compat, expected", MCQ)
def test_mcq(pred, gold, compat, expected) -> None:
    assert verify_mcq(pred, gold, compat) == expected


@pytest.mark.parametrize("bench, gold, expected", [
    ("infovqa", "42", "anls_chart"), ("ChartQA_Pro", "42", "chart"), ("CharXiv", "x", "chart"),
    ("MMStar", "B", "mcq"), ("MathVision", "\\frac{1}{2}", "math"), ("mmmu", "(C)", "mcq"),
])
def test_official_routing(bench: str, gold: str, expected: str) -> None:
    assert scorer_for(bench, gold) == expected


def test_score_end_to_end_both_modes() -> None:
    response = OFFICIAL_WRAP.format("41.9")
    assert score(response, "42", "chart") == ("41.9", 1.0)
    assert score(response, "42", "chart", "official") == ("41.9", 1.0)
    assert score("I think \\boxed{7}", "7", "math") == ("7", 1.0)
    assert score("I think \\boxed{7}", "7", "math", "official") == (None, 0.0)


def test_case_count() -> None:
    assert len(EXTRACT) + len(MATH) + len(NUMBERS) + len(RELAXED) + len(ANLS) + len(MCQ) + 6 + 4 >= 50
