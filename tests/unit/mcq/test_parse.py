"""Table-driven parser tests: generator outputs -> exact QA lists (or rejections with their reasons)."""

from __future__ import annotations

import pytest

from caprl_kit.mcq import parse_generation
from caprl_kit.schemas import MCQ

RB = ["A) Red", "B) Blue", "C) Green", "D) Black"]


def official(n: int, q: str, opts: list[str], ans: str) -> str:
    body = "\n".join(f"   - {o}" for o in opts)
    return f"#### {n}. **{q}**\n{body}\n**Answer:** {ans}\n------\n"


def Q(q: str, choices: list[str], a: str) -> tuple[str, list[str], str]:
    return (q, choices, a)


CASES: list[tuple[str, str, list[tuple[str, list[str], str]], list[str]]] = [
    # (name, generator text, expected questions, expected rejection reasons)
    ("official one", official(1, "What color is the car?", RB, "B) Blue"), [Q("What color is the car?", RB, "B")], []),
    ("official five",
     "".join(official(i, f"Question number {i}?", RB, "A) Red") for i in range(1, 6)),
     [Q(f"Question number {i}?", RB, "A") for i in range(1, 6)], []),
    ("preamble and trailing chatter",
     "Sure! Here are the questions:\n\n" + official(1, "Is it day?", ["A) Yes", "B) No"], "A) Yes")
     + "\nLet me know if you need more.\nA) this line is chatter",
     [Q("Is it day?", ["A) Yes", "B) No"], "A")], []),
    ("labels A.", "#### 1. **Which animal?**\n- A. Cat\n- B. Dog\n**Answer:** B. Dog",
     [Q("Which animal?", ["A) Cat", "B) Dog"], "B")], []),
    ("labels (A)", "1. Which animal?\n(A) Cat\n(B) Dog\nAnswer: (A)", [Q("Which animal?", ["A) Cat", "B) Dog"], "A")], []),
    ("labels A:", "1. Which animal?\nA: Cat\nB: Dog\nAnswer: B", [Q("Which animal?", ["A) Cat", "B) Dog"], "B")], []),
    ("full-width labels", "1．哪个城市？\nA．北京\nB．上海\n答案: x\nAnswer：A", [Q("哪个城市？", ["A) 北京", "B) 上海"], "A")], []),
    ("full-width colon", "1. Which city?\nA：Beijing\nB：Shanghai\nAnswer：B：Shanghai",
     [Q("Which city?", ["A) Beijing", "B) Shanghai"], "B")], []),
    ("no bold", "#### 1. What is shown?\n   - A) A tree\n   - B) A car\nAnswer: A) A tree",
     [Q("What is shown?", ["A) A tree", "B) A car"], "A")], []),
    ("numbered without ####", "1. What is shown?\n- A) A tree\n- B) A car\n**Answer:** B",
     [Q("What is shown?", ["A) A tree", "B) A car"], "B")], []),
    ("bold numbered", "**1. What is shown?**\n- A) A tree\n- B) A car\n**Answer:** B",
     [Q("What is shown?", ["A) A tree", "B) A car"], "B")], []),
    ("Question N:", "Question 1: What is shown?\nA) A tree\nB) A car\nAnswer: A",
     [Q("What is shown?", ["A) A tree", "B) A car"], "A")], []),
    ("Q1.", "Q1. What is shown?\nA) A tree\nB) A car\nAnswer: A", [Q("What is shown?", ["A) A tree", "B) A car"], "A")], []),
    ("answer letter only", official(1, "Count?", ["A) 1", "B) 2", "C) 3"], "C"), [Q("Count?", ["A) 1", "B) 2", "C) 3"], "C")], []),
    ("answer letter in parens", official(1, "Count?", ["A) 1", "B) 2"], "(B)"), [Q("Count?", ["A) 1", "B) 2"], "B")], []),
    ("answer bold letter", "1. Count?\nA) 1\nB) 2\n**Answer: B**", [Q("Count?", ["A) 1", "B) 2"], "B")], []),
    ("answer text only", official(1, "Which fruit?", ["A) Apple", "B) Banana"], "Banana"),
     [Q("Which fruit?", ["A) Apple", "B) Banana"], "B")], []),
    ("answer text with period", official(1, "Which fruit?", ["A) Apple", "B) Banana"], "Apple."),
     [Q("Which fruit?", ["A) Apple", "B) Banana"], "A")], []),
    ("answer text partial", official(1, "Which fruit?", ["A) A red apple", "B) A banana"], "red apple"),
     [Q("Which fruit?", ["A) A red apple", "B) A banana"], "A")], []),
    ("Correct answer label", "1. Which fruit?\nA) Apple\nB) Banana\nCorrect answer: B",
     [Q("Which fruit?", ["A) Apple", "B) Banana"], "B")], []),
    ("lowercase answer keyword and label", "1. Which fruit?\nA) Apple\nB) Banana\nanswer: a) apple",
     [Q("Which fruit?", ["A) Apple", "B) Banana"], "A")], []),
    ("five options", official(1, "Pick", ["A) a1", "B) b1", "C) c1", "D) d1", "E) e1"], "E) e1"),
     [Q("Pick", ["A) a1", "B) b1", "C) c1", "D) d1", "E) e1"], "E")], []),
    ("multi-line stem", "#### 1. **Look at the sign.**\nWhat does it say?\n- A) Stop\n- B) Go\n**Answer:** A) Stop",
     [Q("Look at the sign. What does it say?", ["A) Stop", "B) Go"], "A")], []),
    ("bold inside option", "1. Which?\n- **A)** Cat\n- **B)** Dog\nAnswer: A", [Q("Which?", ["A) Cat", "B) Dog"], "A")], []),
    ("star bullets", "1. Which?\n* A) Cat\n* B) Dog\nAnswer: B", [Q("Which?", ["A) Cat", "B) Dog"], "B")], []),
    ("windows newlines", "1. Which?\r\nA) Cat\r\nB) Dog\r\nAnswer: B\r\n", [Q("Which?", ["A) Cat", "B) Dog"], "B")], []),
    ("separators of other kinds", "1. Which?\nA) Cat\nB) Dog\nAnswer: B\n***\n2. Where?\nA) In\nB) Out\nAnswer: A\n=====",
     [Q("Which?", ["A) Cat", "B) Dog"], "B"), Q("Where?", ["A) In", "B) Out"], "A")], []),
    ("more than five", "".join(official(i, f"Q{i}?", ["A) x", "B) y"], "A) x") for i in range(1, 8)),
     [Q(f"Q{i}?", ["A) x", "B) y"], "A") for i in range(1, 8)], []),
    ("fewer than five", official(1, "Only one?", ["A) yes", "B) no"], "A) yes"), [Q("Only one?", ["A) yes", "B) no"], "A")], []),
    ("whitespace in option", "1. Which?\n   -   A)    Cat  \n   -   B)   Dog\nAnswer: A",
     [Q("Which?", ["A) Cat", "B) Dog"], "A")], []),
    ("numbers in options", "1. How many?\nA) 1\nB) 2\nC) 3\nAnswer: C) 3", [Q("How many?", ["A) 1", "B) 2", "C) 3"], "C")], []),
    ("question with inner numbers", "1. In 2019, what rose 5.5%?\nA) Sales\nB) Costs\nAnswer: A",
     [Q("In 2019, what rose 5.5%?", ["A) Sales", "B) Costs"], "A")], []),
    # rejected blocks, with reasons
    ("no options", "#### 1. **What is this?**\n**Answer:** A", [], ["no options"]),
    ("one option", "1. What?\nA) Only\nAnswer: A", [], ["needs at least 2 choices, got 1"]),
    ("no answer line", "1. What?\nA) x\nB) y\n------\n2. Then?\nA) p\nB) q\nAnswer: B",
     [Q("Then?", ["A) p", "B) q"], "B")], ["no answer line"]),
    ("answer letter out of range", official(1, "What?", ["A) x", "B) y"], "E) z"), [], ["answer 'E) z': label 'E' is not one of the labels A, B"]),
    ("answer text matches nothing", official(1, "What?", ["A) cat", "B) dog"], "a horse"), [],
     ["answer 'a horse' is neither a label (A, B) nor the text of a choice"]),
    ("answer text ambiguous", official(1, "What?", ["A) red car", "B) red bus"], "red"), [],
     ["answer 'red' is neither a label (A, B) nor the text of a choice"]),
    ("duplicate labels", "1. What?\nA) x\nA) y\nAnswer: A", [], ["duplicate labels A in A, A"]),
    ("empty answer", "1. What?\nA) x\nB) y\nAnswer:", [], ["no answer line"]),
    ("duplicate question", official(1, "Same?", ["A) x", "B) y"], "A") + official(2, "Same?", ["A) y", "B) x"], "B"),
     [Q("Same?", ["A) x", "B) y"], "A")], ["duplicate question"]),
    ("same stem different answer kept", official(1, "Same?", ["A) x", "B) y"], "A") + official(2, "Same?", ["A) x", "B) y"], "B"),
     [Q("Same?", ["A) x", "B) y"], "A"), Q("Same?", ["A) x", "B) y"], "B")], []),
    ("empty text", "", [], []),
    ("prose only", "I cannot generate questions for this image because it is blank.", [], []),
    ("mixed good and bad",
     official(1, "Good?", ["A) yes", "B) no"], "A") + "2. Bad?\nA) only\nAnswer: A\n" + official(3, "Also good?", ["A) u", "B) v"], "v"),
     [Q("Good?", ["A) yes", "B) no"], "A"), Q("Also good?", ["A) u", "B) v"], "B")], ["needs at least 2 choices, got 1"]),
]


@pytest.mark.parametrize("name, text, expected, reasons", CASES, ids=[c[0] for c in CASES])
def test_parse_table(name: str, text: str, expected: list, reasons: list[str]) -> None:
    result = parse_generation(text)
    assert [(q.question, q.choices, q.answer) for q in result.questions] == expected
    assert [r.reason for r in result.rejected] == reasons


def test_table_size() -> None:
    assert len(CASES) >= 40


def test_max_questions_caps_the_output() -> None:
    text = "".join(official(i, f"Q{i}?", ["A) x", "B) y"], "A") for i in range(1, 8))
    assert len(parse_generation(text, max_questions=5).questions) == 5
