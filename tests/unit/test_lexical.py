"""The lexical answerer: exact expected letters over a table of caption/question cases."""

from __future__ import annotations

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.lexical import answer, parse_prompt

CANNOT = "Can not answer based on the caption"
COLORS = ["red", "blue", "green", "yellow"]


def opts(*texts: str) -> list[tuple[str, str]]:
    return [("ABCDEFGHI"[i], t) for i, t in enumerate(texts)]


CASES = [
    # (caption, question stem, options, expected letter)
    ("A red circle in the middle of a white background.", "What color is the circle?", opts(*COLORS, CANNOT), "A"),
    ("A blue square next to a tree.", "What color is the square?", opts(*COLORS, CANNOT), "B"),
    ("Green grass under a cloudy sky.", "What color is the grass?", opts(*COLORS, CANNOT), "C"),
    # the clause that mentions the asked-about object wins
    ("A red circle and a blue square.", "What color is the circle?", opts(*COLORS, CANNOT), "A"),
    ("A red circle and a blue square.", "What color is the square?", opts(*COLORS, CANNOT), "B"),
    ("On the left a yellow star, on the right a green triangle.", "What color is the triangle?",
     opts(*COLORS, CANNOT), "C"),
    # nothing supported -> cannot answer (the caption never mentions the square: its red is the circle's)
    ("A red circle.", "What color is the square?", opts(*COLORS, CANNOT), "E"),
    ("A dog sleeping on a sofa.", "What color is the car?", opts(*COLORS, CANNOT), "E"),
    ("", "What color is the circle?", opts(*COLORS, CANNOT), "E"),
    # tie -> cannot answer
    ("A red and blue flag.", "What color is the flag?", opts(*COLORS, CANNOT), "E"),
    ("Red, blue, green and yellow balloons.", "Which color is shown?", opts(*COLORS, CANNOT), "E"),
    # cannot-answer option under other labels/wordings
    ("A cat on a mat.", "What is on the table?", opts("a cup", "a plate", "None of the above"), "C"),
    ("A cat on a mat.", "What is on the table?", opts("a cup", "a plate", "a fork", "a knife", "a spoon", CANNOT), "F"),
    # no cannot-answer option and nothing supported -> no letter
    ("A cat on a mat.", "What is on the table?", opts("a cup", "a plate"), None),
    ("A red and blue flag.", "What color is the flag?", opts(*COLORS), None),
    # stemming and normalisation
    ("Two dogs running across the field.", "What are the dogs doing?", opts("sleeping", "runs", "eating", CANNOT), "B"),
    ("Several CARS parked outside.", "What is parked outside?", opts("car", "bicycle", "boat", CANNOT), "A"),
    ("A woman is holding an umbrella.", "What is she holding?", opts("a bag", "umbrellas", "a phone", CANNOT), "B"),
    # numbers
    ("There are three apples on the plate.", "How many apples are there?", opts("two", "three", "four", CANNOT), "B"),
    ("The chart shows a value of 42 percent in 2020.", "What value is shown?", opts("24", "42", "2019", CANNOT), "B"),
    # words shared by every option are ignored
    ("A small red car.", "What is the car like?", opts("small red car", "small blue car", "small green car", CANNOT), "A"),
    # multi-word option: more matching words win
    ("A man wearing a red jacket and black hat.", "What is the man wearing?",
     opts("a red jacket", "a black dress", "a red jacket and black hat", CANNOT), "C"),
    # position words
    ("The star is at the top left corner.", "Where is the star?", opts("bottom right", "top left", "center", CANNOT), "B"),
]


@pytest.mark.parametrize("caption, stem, options, expected", CASES)
def test_answer_table(caption: str, stem: str, options: list[tuple[str, str]], expected: str | None) -> None:
    assert answer(caption, stem, options) == expected


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert sum(1 for c in CASES if c[3] == "E") >= 4  # cannot-answer and tie cases


def caprl_prompt(caption: str, question: str) -> str:
    # few-shot examples first (their captions must not be used), then the real caption
    return (
        "Answer the multiple-choice question strictly based on the caption.\n"
        "Example: Caption: <Caption Start> A girl in a green dress. <Caption End>\n"
        "Question: What color is the dress?\n   - A) green\n   - B) red\nThe answer is A.\n"
        "Now, answer the question based on the following caption:\n"
        f"Caption: <Caption Start> {caption} <Caption End>\nQuestion: {question}"
    )


def test_prompt_parsing_uses_the_last_caption() -> None:
    q = "What color is the dress?\n   - A) green\n   - B) red\n   - F) Can not answer based on the caption"
    caption, stem, options = parse_prompt(caprl_prompt("A woman in a red dress.", q))
    assert caption == "A woman in a red dress."
    assert stem == "What color is the dress?"
    assert [o[0] for o in options] == ["A", "B", "F"]


@pytest.mark.parametrize("label", ["A)", "A.", "(A)", "A:", "A．"])
def test_option_label_variants(label: str) -> None:
    q = "What color is the dress?\n" + "\n".join(
        f"- {label.replace('A', letter)} {t}" for letter, t in zip("ABC", ["green", "red", CANNOT])
    )
    assert [o[0] for o in parse_prompt(f"Caption: a red dress\nQuestion: {q}")[2]] == ["A", "B", "C"]


def test_backend_answers_with_and_without_prefill() -> None:
    backend = build_backend(BackendConfig(name="lexical", sampling={"n": 3}))
    q = "What color is the dress?\n   - A) green\n   - B) red\n   - C) Can not answer based on the caption"
    prompt = caprl_prompt("A woman in a red dress.", q)
    with_prefill, plain, bad = backend.generate(
        [Request.user(prompt, prefill="The answer is"), Request.user(prompt), Request.user("no options here")]
    )
    assert with_prefill.texts == [" B."] * 3
    assert plain.texts == ["The answer is B."] * 3
    assert bad.error_kind == "bad_request" and not bad.texts
