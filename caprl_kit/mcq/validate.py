"""The one strict MCQ validator. Every entry point that accepts MCQs (curate import and parse, training and eval
ground truth, the reward server) goes through :func:`validate_mcq`.

Checks: a non-empty question; 2 to 8 choices (:data:`MAX_CHOICES`: the reward appends one more), each non-empty;
unique labels (unlabelled choices are labelled A, B, ... by position); unique choice texts; an answer that names one
of the labels (``"B"``, ``"b"``, ``"(B)"``, ``"B)"``, ``"B. red"``) or is exactly the text of one choice (case and
whitespace aside: ``"purple"`` -> its label).
Anything else raises :class:`~caprl_kit.errors.InvalidMCQ` with a stable ``kind`` and a ``reason`` naming the
problem; an answer is never cut to its first letter.
"""

from __future__ import annotations

import re
from typing import Any

from caprl_kit.errors import InvalidMCQ
from caprl_kit.mcq.options import CHOICE_RE, LETTERS
from caprl_kit.schemas.curate import MCQ

FIELDS = ("question", "choices", "answer")
#: the most choices an MCQ may have: the reward's cannot-answer option (curation's "None of the above") is appended
#: labelled after the last choice (``shuffle_options``), and the labels run A to I
MAX_CHOICES = len(LETTERS) - 1
#: a bare label: "B", "b", "(B)", "B)", "B.", "[B]"
_BARE_LABEL = re.compile(r"[(（\[]?\s*([A-Za-z])\s*[)）\].．:：]?")
#: a label followed by text: "B. red", "b) red", "(B) red"
_LABEL_TEXT = re.compile(r"[(（]?\s*([A-Za-z])\s*[)）.．:：]\s*(.+)")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _fail(kind: str, reason: str, where: str | None) -> InvalidMCQ:
    return InvalidMCQ(kind, reason, where)


def _fields(obj: Any, where: str | None) -> tuple[Any, Any, Any]:
    if isinstance(obj, MCQ):
        return obj.question, obj.choices, obj.answer
    if not isinstance(obj, dict):
        raise _fail("not_an_mcq", f"expected a {{question, choices, answer}} object, got {type(obj).__name__}", where)
    unknown = sorted(set(obj) - set(FIELDS), key=str)
    if unknown:
        raise _fail("not_an_mcq", f"unknown field(s) {', '.join(repr(k) for k in unknown)}", where)
    missing = [k for k in FIELDS if k not in obj]
    if missing:
        raise _fail("not_an_mcq", f"missing field(s) {', '.join(repr(k) for k in missing)}", where)
    return obj["question"], obj["choices"], obj["answer"]


def _choices(choices: Any, where: str | None) -> list[tuple[str, str]]:
    if hasattr(choices, "tolist"):  # numpy arrays from Parquet/pandas
        choices = choices.tolist()
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise _fail("not_an_mcq", "choices must be a list of strings", where)
    if len(choices) < 2:
        raise _fail("too_few_choices", f"needs at least 2 choices, got {len(choices)}", where)
    if len(choices) > MAX_CHOICES:
        raise _fail(
            "too_many_choices",
            f"{len(choices)} choices, at most {MAX_CHOICES}: the reward appends a "
            f"cannot-answer option (curation: none of the above) as one more label, and labels run "
            f"A-{LETTERS[-1]}",
            where,
        )
    pairs = []
    for i, c in enumerate(choices):
        m = CHOICE_RE.match(c)
        label, text = (m.group(1), m.group(2).strip()) if m else (None, c.strip())
        if not text:
            raise _fail("empty_choice", f"choices[{i}] is empty ({c!r})", where)
        if label is None:
            label = LETTERS[i]
        pairs.append((label, text))
    labels = [label for label, _ in pairs]
    dup = sorted({label for label in labels if labels.count(label) > 1})
    if dup:
        raise _fail("duplicate_labels", f"duplicate labels {', '.join(dup)} in {', '.join(labels)}", where)
    texts = [_norm(t) for _, t in pairs]
    same = [t for _, t in pairs if texts.count(_norm(t)) > 1]
    if same:
        raise _fail("duplicate_choices", f"choice text {same[0]!r} appears more than once", where)
    return pairs


def _answer(answer: Any, pairs: list[tuple[str, str]], where: str | None) -> str:
    if not isinstance(answer, str):
        raise _fail("not_an_mcq", f"answer must be a string, got {type(answer).__name__}", where)
    raw = " ".join(answer.split())
    if not raw:
        raise _fail("no_answer", "empty answer", where)
    labels = [label for label, _ in pairs]
    shown = ", ".join(labels)
    bare = _BARE_LABEL.fullmatch(raw)
    if bare and bare.group(1).upper() in labels:
        return bare.group(1).upper()
    by_text = {_norm(t): label for label, t in pairs}
    if _norm(raw) in by_text:  # the text of one choice ("purple", "v")
        return by_text[_norm(raw)]
    if bare:
        raise _fail("answer_not_a_label", f"answer {raw!r} is not one of the labels {shown}", where)
    m = _LABEL_TEXT.fullmatch(raw)
    if m:
        label, text = m.group(1).upper(), _norm(m.group(2))
        if label not in labels:
            raise _fail(
                "answer_not_a_label", f"answer {raw!r}: label {label!r} is not one of the labels {shown}", where
            )
        own = _norm(dict(pairs)[label])
        if text != own and text in by_text:
            raise _fail(
                "answer_mismatch", f"answer {raw!r} names label {label} but the text of choice {by_text[text]}", where
            )
        return label
    raise _fail("answer_not_a_choice", f"answer {raw!r} is neither a label ({shown}) nor the text of a choice", where)


def validate_mcq(obj: MCQ | dict[str, Any], where: str | None = None) -> MCQ:
    """The canonical MCQ (``"X) text"`` choices, the answer as its label) or :class:`InvalidMCQ`.

    ``where`` (e.g. ``"prompts[1].qa[0]"``) prefixes the error message so callers can name the offending item."""
    question, choices, answer = _fields(obj, where)
    if not isinstance(question, str):
        raise _fail("not_an_mcq", f"question must be a string, got {type(question).__name__}", where)
    if not question.strip():
        raise _fail("empty_question", "empty question", where)
    pairs = _choices(choices, where)
    label = _answer(answer, pairs, where)
    return MCQ(question=question.strip(), choices=[f"{lb}) {t}" for lb, t in pairs], answer=label)
