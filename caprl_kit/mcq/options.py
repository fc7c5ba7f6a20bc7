"""Choice labels, the official option layout, shuffling with answer tracking, and answer-letter extraction.

Canonical QA (``caprl_kit.schemas.MCQ``): a question stem, labelled choices ``["A) red", "B) blue", ...]`` and the
answer letter. The official layout renders it as the stem followed by ``"\\n   - A) red"`` lines (spec §1.3/§2.2).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from caprl_kit.schemas.curate import MCQ

LETTERS = "ABCDEFGHI"
CANNOT_ANSWER = "Can not answer based on the caption"
NONE_OF_THE_ABOVE = "None of the above"

#: a labelled choice in any common form: "A) x", "A. x", "(A) x", "A: x", "A．x", "**A)** x", "- A) x"
CHOICE_RE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\*\*)?\s*[(（]?\s*([A-I])\s*(?:\*\*)?\s*[)）.．:：]\s*(?:\*\*)?\s*(.*?)\s*(?:\*\*)?\s*$"
)
#: the official server's option regex (spec §2.2): used to split a question_full in compat mode
OFFICIAL_OPTION_RE = re.compile(r"-\s*([A-F])\)\s*(.+)")
#: the official cannot-answer line it strips before shuffling
OFFICIAL_CANNOT_RE = re.compile(r"\n?\s*-\s*[EF]\)\s*Can not answer based on the caption\s*")


def normalize_choice(choice: str) -> tuple[str | None, str]:
    """``"A. Black"`` / ``"(A) Black"`` / ``"A) Black"`` -> ("A", "Black"); an unlabelled choice -> (None, text)."""
    m = CHOICE_RE.match(choice)
    if m and m.group(2):
        return m.group(1), m.group(2).strip()
    return None, choice.strip()


def choice_texts(mcq: MCQ) -> list[tuple[str, str]]:
    """(label, text) per choice; an unlabelled choice takes its position's letter."""
    out = []
    for i, choice in enumerate(mcq.choices):
        label, text = normalize_choice(choice)
        out.append((label or LETTERS[i], text))
    return out


def render(mcq: MCQ, choices: Sequence[str] | None = None) -> str:
    """The official question_full: stem + ``"\\n   - X) text"`` per choice."""
    return mcq.question + "".join(f"\n   - {c}" for c in (choices if choices is not None else mcq.choices))


def split_question_full(question_full: str) -> MCQ | None:
    """Parse an official ``question_full`` (stem + option lines) back into an MCQ with an empty answer."""
    lines = question_full.split("\n")
    stem_lines, choices = [], []
    for line in lines:
        label, text = normalize_choice(line)
        if label and text:
            choices.append(f"{label}) {text}")
        elif not choices:
            stem_lines.append(line)
    if not choices:
        return None
    return MCQ(question="\n".join(stem_lines).strip(), choices=choices, answer="")


@dataclass(frozen=True)
class Shuffled:
    question_full: str  # what the answerer reads
    choices: list[str]  # labelled choices in display order
    answer: str  # correct letter after shuffling


def shuffle_options(
    mcq: MCQ,
    rng: random.Random,
    *,
    extra_option: str | None = CANNOT_ANSWER,
    extra_label: Literal["next", "F"] = "next",
    shuffle: bool = True,
    pairs: list[tuple[str, str]] | None = None,
) -> Shuffled:
    """Shuffle the options, relabel from A, track the answer, and append ``extra_option`` (the cannot-answer
    option for rewards, "None of the above" for curation). ``extra_label="F"`` reproduces the official server,
    which always labels it F (so 4 options run A, B, C, D, F; spec §2.2). ``pairs``: ``choice_texts(mcq)``, when
    the caller shuffles one MCQ many times."""
    pairs = choice_texts(mcq) if pairs is None else pairs
    pairs = [(label, text) for label, text in pairs if text.strip() != CANNOT_ANSWER]
    texts = [t for _, t in pairs]
    labels = [label for label, _ in pairs]
    if mcq.answer not in labels:
        raise ValueError(f"answer {mcq.answer!r} is not among the choices {labels}")
    correct = texts[labels.index(mcq.answer)]
    order = list(range(len(texts)))
    if shuffle:
        rng.shuffle(order)
    shown = [f"{LETTERS[i]}) {texts[j]}" for i, j in enumerate(order)]
    answer = LETTERS[[texts[j] for j in order].index(correct)]
    if extra_option:
        label = "F" if extra_label == "F" else LETTERS[len(shown)]
        shown.append(f"{label}) {extra_option}")
    return Shuffled(question_full=render(mcq, shown), choices=shown, answer=answer)


def official_shuffle(question_full: str, answer: str, rng: random.Random) -> Shuffled:
    """The official server's ``shuffle_options`` (spec §2.2), bit for bit in its label behaviour: strip an E)/F)
    cannot-answer line, parse ``-\\s*([A-F])\\)\\s*(.+)``, shuffle, relabel from A, always append
    ``"\\n   - F) Can not answer based on the caption"``; if the answer label is not among the parsed options,
    return the question unshuffled with F appended."""
    base = OFFICIAL_CANNOT_RE.sub("", question_full).rstrip()
    found = OFFICIAL_OPTION_RE.findall(base)
    labels = [label for label, _ in found]
    suffix = f"\n   - F) {CANNOT_ANSWER}"
    if answer not in labels:
        return Shuffled(question_full=base + suffix, choices=[f"{label}) {t}" for label, t in found], answer=answer)
    stem = base[: OFFICIAL_OPTION_RE.search(base).start()].rstrip()  # type: ignore[union-attr]  # found is not empty, so the pattern matches
    stem = re.sub(r"\n\s*$", "", stem)
    texts = [t.strip() for _, t in found]
    correct = texts[labels.index(answer)]
    rng.shuffle(texts)
    shown = [f"{LETTERS[i]}) {t}" for i, t in enumerate(texts)]
    return Shuffled(
        question_full=stem + "".join(f"\n   - {c}" for c in shown) + suffix,
        choices=[*shown, f"F) {CANNOT_ANSWER}"],
        answer=LETTERS[texts.index(correct)],
    )


# --------------------------------------------------------------------------- answer letters

_ANSWER_IS = re.compile(r"answer\s*(?:is|:)?\s*[:：]?\s*\**\s*[(（\[]?\s*([A-I])\b(?![a-z])", re.IGNORECASE)
_LEADING = re.compile(r"^\s*\**\s*[(（\[]?\s*([A-I])\s*(?:[)）\].．:：,]|\*\*|$)")
_PAREN = re.compile(r"[(（]\s*([A-I])\s*[)）]|\b([A-I])\)")


def parse_easy(text: str) -> str | None:
    """The official extraction: the first uppercase letter in [A-I] anywhere (so "Can ..." reads as C)."""
    m = re.search(r"[A-I]", text)
    return m.group(0) if m else None


def extract_letter(text: str, choices: Sequence[str] = ()) -> str | None:
    """Robust extraction: "The answer is X" / "Answer: (X)", a leading letter ("C.", "(C)", "C) ..."), a
    parenthesised letter anywhere, or the text of exactly one option echoed back. None when nothing matches."""
    if not text:
        return None
    m = _ANSWER_IS.search(text)
    if m and m.group(1).isupper():
        return m.group(1)
    m = _LEADING.match(text)
    if m:
        return m.group(1)
    m = _PAREN.search(text)
    if m:
        return m.group(1) or m.group(2)
    if choices:
        low = text.lower()
        hits = [label for label, t in (normalize_choice(c) for c in choices) if label and t and t.lower() in low]
        if len(hits) == 1:
            return hits[0]
    return None
