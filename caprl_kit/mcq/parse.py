"""Parse generator output (spec §1.2 layout and the variants real models emit) into canonical MCQs.

Accepted: ``#### N. **Q**`` headings, numbered questions without ``####`` (``1. Q``, ``**1. Q**``, ``Question 1:``,
``Q1.``), bold or not; option labels ``A)``, ``A.``, ``(A)``, ``A:``, full-width ``A．``/``A：``, with or without a
leading ``-``; answers as ``**Answer:** C) text``, ``Answer: C``, ``Correct answer: (C)``, ``Answer: text``
(matched to an option); separators, blank lines and trailing chatter are ignored. Any number of questions.

Each question block either becomes an ``MCQ`` (through the strict validator, ``caprl_kit.mcq.validate``) or a
``Rejected`` with its reason and kind (no options, no answer line, or the validator's: one option, duplicate labels,
answer not a label, answer text matching no option, ...). Duplicates within one item are dropped (same normalised
stem and answer text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from caprl_kit.errors import InvalidMCQ
from caprl_kit.mcq.options import CHOICE_RE
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.schemas.curate import MCQ

QUESTION_RE = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*\s*)?(?:(?:question|q)\s*)?(\d{1,3})\s*[.)．:：]\s*(?:\*\*)?\s*(.*?)\s*(?:\*\*)?\s*$",
    re.IGNORECASE,
)
QUESTION_WORD_RE = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*\s*)?(?:question|q)\s*[:：]\s*(?:\*\*)?\s*(.*?)\s*(?:\*\*)?\s*$", re.IGNORECASE
)
ANSWER_RE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\*\*)?\s*(?:correct\s+)?answer\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*(.*?)\s*(?:\*\*)?\s*$",
    re.IGNORECASE,
)
SEPARATOR_RE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$")


@dataclass
class Rejected:
    index: int  # block number in the text (0-based)
    question: str
    reason: str
    kind: str = "invalid"  # stable reason: no_options, no_answer, duplicate, or an InvalidMCQ kind


@dataclass
class ParseResult:
    questions: list[MCQ] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    n_blocks: int = 0
    n_duplicates: int = 0


@dataclass
class _Block:
    stem: list[str]
    options: list[tuple[str, str]] = field(default_factory=list)
    answer: str | None = None
    closed: bool = False  # an answer line was seen: later free text is chatter


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("**", "")).strip()


def _is_question_line(line: str) -> str | None:
    m = QUESTION_RE.match(line)
    if m and m.group(2) and not CHOICE_RE.match(line):
        return m.group(2)
    m = QUESTION_WORD_RE.match(line)
    if m and m.group(1):
        return m.group(1)
    return None


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        if not line.strip() or SEPARATOR_RE.match(line):
            continue
        ans = ANSWER_RE.match(line)
        if ans and blocks:
            blocks[-1].answer = ans.group(1)
            blocks[-1].closed = True
            continue
        stem = _is_question_line(line)
        if stem is not None and (not blocks or blocks[-1].options or blocks[-1].closed):
            blocks.append(_Block(stem=[stem]))
            continue
        opt = CHOICE_RE.match(line)
        if opt and opt.group(2) and blocks and not blocks[-1].closed:
            blocks[-1].options.append((opt.group(1), opt.group(2)))
            continue
        if stem is not None:  # a numbered line before any option: a new question after all
            blocks.append(_Block(stem=[stem]))
        elif blocks and not blocks[-1].options and not blocks[-1].closed:
            blocks[-1].stem.append(line.strip())  # a stem continued on the next line
        # anything else is chatter
    return blocks


def _validate_block(question: str, block: _Block) -> MCQ:
    """The block as an MCQ through the strict validator. Generator output gets one leniency on top: an answer text
    that is not exactly an option's text but is contained in (or contains) exactly one of them ("red apple" for
    "A) A red apple", "Apple." for "A) Apple")."""
    choices = [f"{lb}) {_clean(t)}" for lb, t in block.options]
    answer = _clean(block.answer or "")
    try:
        return validate_mcq({"question": question, "choices": choices, "answer": answer})
    except InvalidMCQ as exc:
        if exc.kind != "answer_not_a_choice":
            raise
        want = answer.lower().rstrip(".")
        texts = [(lb, _clean(t).lower()) for lb, t in block.options]
        hits = [lb for lb, t in texts if t == want] or [lb for lb, t in texts if want and (want in t or t in want)]
        if len(hits) != 1:
            raise
        return validate_mcq({"question": question, "choices": choices, "answer": hits[0]})


def parse_generation(text: str, max_questions: int | None = None) -> ParseResult:
    """All questions in a generator's output, with a reason for each block that could not be used."""
    result = ParseResult()
    seen: set[tuple[str, str]] = set()
    for i, block in enumerate(_blocks(text or "")):
        result.n_blocks += 1
        question = _clean(" ".join(block.stem))
        failure = None
        if not question:
            failure = ("empty_question", "empty question")
        elif not block.options:
            failure = ("no_options", "no options")
        elif block.answer is None or not _clean(block.answer):
            failure = ("no_answer", "no answer line")
        else:
            try:
                mcq = _validate_block(question, block)
            except InvalidMCQ as exc:
                failure = (exc.kind, exc.reason)
        if failure is not None:
            result.rejected.append(Rejected(i, question, failure[1], failure[0]))
            continue
        answer_text = next(c.split(") ", 1)[1] for c in mcq.choices if c.startswith(f"{mcq.answer}) "))
        key = (question.lower(), answer_text.lower())
        if key in seen:
            result.n_duplicates += 1
            result.rejected.append(Rejected(i, question, "duplicate question", "duplicate"))
            continue
        seen.add(key)
        result.questions.append(mcq)
        if max_questions is not None and len(result.questions) >= max_questions:
            break
    return result
