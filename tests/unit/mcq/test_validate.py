"""The one strict MCQ validator: a table of good MCQs (-> their canonical form) and bad ones (-> kind + reason)."""

from __future__ import annotations

import pytest

from caprl_kit.errors import CaprlError, InvalidMCQ
from caprl_kit.mcq import parse_generation, validate_mcq
from caprl_kit.schemas import MCQ

COLORS = ["A) red", "B) blue", "C) green", "D) purple"]


def mcq(answer: str, choices: list[str] | None = None, question: str = "What color is the car?") -> dict:
    return {"question": question, "choices": COLORS if choices is None else choices, "answer": answer}


GOOD = [
    # (name, input, expected choices, expected answer)
    ("label", mcq("B"), COLORS, "B"),
    ("lowercase label", mcq("b"), COLORS, "B"),
    ("label in parens", mcq("(B)"), COLORS, "B"),
    ("label with paren", mcq("B)"), COLORS, "B"),
    ("label with period", mcq("B."), COLORS, "B"),
    ("label with spaces", mcq("  C  "), COLORS, "C"),
    ("label and its text", mcq("B. blue"), COLORS, "B"),
    ("label and its text, paren", mcq("D) purple"), COLORS, "D"),
    ("lowercase label and text", mcq("b) blue"), COLORS, "B"),
    ("label and paraphrased text", mcq("B) a blue one"), COLORS, "B"),
    ("option text", mcq("purple"), COLORS, "D"),
    ("option text, case and spaces", mcq("  PURPLE "), COLORS, "D"),
    ("option text of several words", mcq("dark   Blue", ["A) light blue", "B) dark blue"]), ["A) light blue", "B) dark blue"], "B"),
    ("single-letter option text", mcq("v", ["A) u", "B) v"]), ["A) u", "B) v"], "B"),
    ("labels A. normalised", mcq("B", ["A. Black", "B. White"]), ["A) Black", "B) White"], "B"),
    ("labels (A) normalised", mcq("A", ["(A) Black", "(B) White"]), ["A) Black", "B) White"], "A"),
    ("unlabelled choices get A, B, ...", mcq("White", ["Black", "White"]), ["A) Black", "B) White"], "B"),
    ("labels kept when not from A", mcq("F", ["E) x", "F) y"]), ["E) x", "F) y"], "F"),
    ("MCQ object", MCQ(question=" Q? ", choices=["A) x", "B) y"], answer="A"), ["A) x", "B) y"], "A"),
]

BAD = [
    # (name, input, kind, reason fragment)
    ("answer E not among the labels", mcq("E"), "answer_not_a_label", "answer 'E' is not one of the labels A, B, C, D"),
    ("answer (E)", mcq("(E)"), "answer_not_a_label", "not one of the labels A, B, C, D"),
    ("answer E) text", mcq("E) orange"), "answer_not_a_label", "label 'E' is not one of the labels A, B, C, D"),
    ("answer text of no choice", mcq("orange"), "answer_not_a_choice",
     "answer 'orange' is neither a label (A, B, C, D) nor the text of a choice"),
    ("answer text partial", mcq("purp"), "answer_not_a_choice", "'purp'"),
    ("answer label contradicts its text", mcq("B. red"), "answer_mismatch", "names label B but the text of choice A"),
    ("empty answer", mcq("  "), "no_answer", "empty answer"),
    ("answer not a string", mcq(2), "not_an_mcq", "answer must be a string"),  # type: ignore[arg-type]
    ("empty question", mcq("A", question="   "), "empty_question", "empty question"),
    ("question not a string", mcq("A", question=None), "not_an_mcq", "question must be a string"),  # type: ignore[arg-type]
    ("no choices", mcq("A", []), "too_few_choices", "needs at least 2 choices, got 0"),
    ("one choice", mcq("A", ["A) red"]), "too_few_choices", "got 1"),
    ("empty choice", mcq("A", ["A) red", "   "]), "empty_choice", "choices[1] is empty"),
    ("label without text", mcq("A", ["A) red", "B)"]), "empty_choice", "choices[1] is empty"),
    ("choices not strings", mcq("A", ["A) red", 3]), "not_an_mcq", "choices must be a list of strings"),  # type: ignore[list-item]
    ("duplicate labels", mcq("A", ["A) red", "A) blue"]), "duplicate_labels", "duplicate labels A in A, A"),
    ("duplicate labels, mixed", mcq("A", ["red", "A) blue"]), "duplicate_labels", "duplicate labels A"),
    ("duplicate choice texts", mcq("A", ["A) red", "B) Red"]), "duplicate_choices", "'red' appears more than once"),
    ("missing field", {"question": "Q", "choices": ["A) x", "B) y"]}, "not_an_mcq", "missing field(s) 'answer'"),
    ("unknown field", {**mcq("A"), "hint": "x"}, "not_an_mcq", "unknown field(s) 'hint'"),
    ("not an object", "A) red", "not_an_mcq", "got str"),
    # the reward (and curation) appends one more option, labelled after the last choice: 8 choices fit A-I
    ("nine choices", mcq("A", [f"{x}) c{i}" for i, x in enumerate("ABCDEFGHI")]), "too_many_choices",
     "9 choices, at most 8"),
    ("nine unlabelled choices", mcq("A", [f"c{i}" for i in range(9)]), "too_many_choices", "at most 8"),
    ("ten unlabelled choices", mcq("A", [f"c{i}" for i in range(10)]), "too_many_choices", "10 choices"),
]


@pytest.mark.parametrize("name, obj, choices, answer", GOOD, ids=[c[0] for c in GOOD])
def test_good_mcqs_are_canonicalised(name: str, obj, choices: list[str], answer: str) -> None:
    out = validate_mcq(obj)
    assert (out.choices, out.answer) == (choices, answer)
    assert out.question == out.question.strip() and out.question


@pytest.mark.parametrize("name, obj, kind, reason", BAD, ids=[c[0] for c in BAD])
def test_bad_mcqs_are_rejected_with_a_reason(name: str, obj, kind: str, reason: str) -> None:
    with pytest.raises(InvalidMCQ) as info:
        validate_mcq(obj)
    assert info.value.kind == kind
    assert reason in info.value.reason
    assert isinstance(info.value, CaprlError)


def test_where_names_the_offending_item() -> None:
    with pytest.raises(InvalidMCQ) as info:
        validate_mcq(mcq("E", ["A) x", "B) y"]), "prompts[1].qa[0]")
    assert str(info.value) == "prompts[1].qa[0]: answer 'E' is not one of the labels A, B"
    assert info.value.where == "prompts[1].qa[0]"


def test_an_answer_is_never_cut_to_its_first_letter() -> None:
    # the old canonical() read "purple" as "P" and "Banana" as "B"
    assert validate_mcq(mcq("purple")).answer == "D"
    with pytest.raises(InvalidMCQ, match="'Banana' is neither a label"):
        validate_mcq(mcq("Banana", ["A) Apple", "B) Cherry"]))


def test_numpy_choices_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    out = validate_mcq({"question": "Q", "choices": np.array(["A) x", "B) y"], dtype=object), "answer": "B"})
    assert out.choices == ["A) x", "B) y"]


def test_parser_rejections_carry_the_validators_kind() -> None:
    text = ("1. Good?\nA) yes\nB) no\nAnswer: A\n"
            "2. Out of range?\nA) x\nB) y\nAnswer: E\n"
            "3. Lonely?\nA) only\nAnswer: A\n"
            "4. No options?\nAnswer: A\n")
    result = parse_generation(text)
    assert [q.question for q in result.questions] == ["Good?"]
    assert [(r.index, r.kind) for r in result.rejected] == [
        (1, "answer_not_a_label"), (2, "too_few_choices"), (3, "no_options")]
    assert result.rejected[0].reason == "answer 'E' is not one of the labels A, B"


def test_every_valid_mcq_leaves_room_for_the_appended_option() -> None:
    """8 choices validate and shuffle with the cannot-answer (reward) or none-of-the-above (curation) option as I;
    a 9th choice is refused by the validator, so no consumer meets it (it used to be an IndexError in every one)."""
    import random

    from caprl_kit.mcq import NONE_OF_THE_ABOVE, shuffle_options
    from caprl_kit.mcq.options import CANNOT_ANSWER

    eight = validate_mcq(mcq("H", [f"c{i}" for i in range(8)]))
    for extra in (CANNOT_ANSWER, NONE_OF_THE_ABOVE):
        shown = shuffle_options(eight, random.Random(0), extra_option=extra)
        assert shown.choices[-1] == f"I) {extra}" and len(shown.choices) == 9
    with pytest.raises(InvalidMCQ) as info:
        validate_mcq(mcq("A", [f"c{i}" for i in range(9)]), "ground_truth[0]")
    assert str(info.value).startswith("ground_truth[0]: 9 choices, at most 8")
    text = "1. Which one?\n" + "".join(f"{x}) c{i}\n" for i, x in enumerate("ABCDEFGHI")) + "Answer: A\n"
    result = parse_generation(text)
    assert not result.questions and [r.kind for r in result.rejected] == ["too_many_choices"]
