"""Shuffling with answer tracking, cannot-answer labels (ours vs official), letter extraction."""

from __future__ import annotations

import random

import pytest

from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.mcq.options import (
    CANNOT_ANSWER, extract_letter, normalize_choice, official_shuffle, parse_easy, render, shuffle_options,
    split_question_full,
)
from caprl_kit.schemas import MCQ

Q4 = MCQ(question="What color is the car?", choices=["A) red", "B) blue", "C) green", "D) black"], answer="B")


@pytest.mark.parametrize("raw, expected", [
    ("A) Black", ("A", "Black")), ("A. Black", ("A", "Black")), ("(A) Black", ("A", "Black")),
    ("A: Black", ("A", "Black")), ("A．黑色", ("A", "黑色")), ("- B) x y", ("B", "x y")), ("**C)** z", ("C", "z")),
    ("Black", (None, "Black")),
])
def test_normalize_choice(raw: str, expected: tuple) -> None:
    assert normalize_choice(raw) == expected


def test_video_qa_labels_are_canonicalised() -> None:
    q = validate_mcq({"question": "Color?", "choices": ["A. Black", "B. White"], "answer": "B"})
    assert q.choices == ["A) Black", "B) White"] and q.answer == "B"


def test_render_official_layout_and_back() -> None:
    full = render(Q4)
    assert full == "What color is the car?\n   - A) red\n   - B) blue\n   - C) green\n   - D) black"
    back = split_question_full(full)
    assert back.question == Q4.question and back.choices == Q4.choices


@pytest.mark.parametrize("seed", range(20))
def test_shuffle_tracks_the_answer(seed: int) -> None:
    s = shuffle_options(Q4, random.Random(seed))
    shown = dict(c.split(") ", 1) for c in s.choices)
    assert shown[s.answer] == "blue"
    assert s.choices[-1] == f"E) {CANNOT_ANSWER}"  # next free label
    assert [c[0] for c in s.choices] == list("ABCDE")


def test_shuffle_variants() -> None:
    s = shuffle_options(Q4, random.Random(0), extra_option="None of the above")
    assert s.choices[-1] == "E) None of the above"
    s = shuffle_options(Q4, random.Random(0), extra_label="F")
    assert [c[0] for c in s.choices] == list("ABCDF")
    s = shuffle_options(Q4, random.Random(0), extra_option=None, shuffle=False)
    assert s.choices == Q4.choices and s.answer == "B"
    with_cannot = MCQ(question="Q", choices=["A) x", "B) y", f"C) {CANNOT_ANSWER}"], answer="A")
    s = shuffle_options(with_cannot, random.Random(1))
    assert len(s.choices) == 3 and s.choices[-1] == f"C) {CANNOT_ANSWER}"  # the old line is replaced, not doubled
    with pytest.raises(ValueError, match="not among"):
        shuffle_options(MCQ(question="Q", choices=["A) x", "B) y"], answer="D"), random.Random(0))


def test_official_shuffle_label_behaviour() -> None:
    """spec §2.2: strip an E)/F) cannot-answer line, relabel from A, always append F (A, B, C, D, F)."""
    full = render(Q4) + f"\n   - E) {CANNOT_ANSWER}"
    s = official_shuffle(full, "B", random.Random(3))
    assert [c[0] for c in s.choices] == list("ABCDF")
    assert s.question_full.endswith(f"\n   - F) {CANNOT_ANSWER}")
    assert s.question_full.count(CANNOT_ANSWER) == 1
    assert dict(c.split(") ", 1) for c in s.choices)[s.answer] == "blue"
    # answer label missing from the parsed options: unshuffled, F still appended
    odd = official_shuffle(render(Q4), "G", random.Random(0))
    assert odd.question_full == render(Q4) + f"\n   - F) {CANNOT_ANSWER}" and odd.answer == "G"


@pytest.mark.parametrize("text, expected", [
    (" C.", "C"), ("C", "C"), (" (B)", "B"), ("The answer is D.", "D"), ("answer: (A)", "A"), ("B) blue", "B"),
    ("I think it is (C) since...", "C"), ("Answer: E", "E"), (" blue", "B"), ("nothing here", None), ("", None),
    ("Can not answer", None), ("The answer is E) Can not answer based on the caption", "E"),
])
def test_extract_letter(text: str, expected: str | None) -> None:
    assert extract_letter(text, Q4.choices) == expected


@pytest.mark.parametrize("text, expected", [
    (" C.", "C"), ("Can not answer", "C"), ("the dog (B)", "B"), ("none", None), ("It is J", "I"), (" I think A", "I"),
])
def test_parse_easy_reproduces_the_official_quirks(text: str, expected: str | None) -> None:
    assert parse_easy(text) == expected
