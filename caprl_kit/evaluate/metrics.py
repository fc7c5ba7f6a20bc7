"""Prism scorers (spec §5.1): boxed-answer extraction, math_verify, relaxed accuracy, ANLS, MCQ letters.

Defaults fix the official evaluator's two bugs; ``compat="official"`` reproduces them so published numbers can
be matched:
1. a gold answer that ``math_verify`` cannot parse scores **1.0** (official) instead of falling back to a
   normalised string comparison (fixed);
2. relaxed accuracy measures the relative error against the **prediction** (official: arguments swapped) instead
   of against the gold (fixed, pix2struct's definition).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from caprl_kit.mcq.options import extract_letter
from caprl_kit.registry import Registry

Compat = Literal["fixed", "official"]
SCORERS = Registry("scorer")

_OFFICIAL_BOXED = re.compile(r"</think>\s*<answer>.*?\\boxed{(.*)}.*?</answer>", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_answer(text: str, compat: Compat = "fixed") -> str | None:
    """The answer in a response. official: the last ``</think> <answer> ... \\boxed{X} ... </answer>`` match;
    fixed: the last balanced ``\\boxed{}``, else the ``<answer>`` tag, else "answer is X", else the stripped text."""
    if compat == "official":
        found = _OFFICIAL_BOXED.findall(text or "")
        return found[-1] if found else None
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    tag = _ANSWER_TAG.findall(text)
    if tag:
        return tag[-1].strip()
    m = _ANSWER_IS.findall(text)
    if m:
        return m[-1].strip().rstrip(".")
    return text.strip()


@lru_cache(maxsize=4096)
def _parse(expr: str):
    from math_verify import parse

    try:
        return parse(expr)
    except Exception:  # noqa: BLE001 - math_verify raises on odd LaTeX; treat as unparseable
        return []


def _normalize(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s.%-]", "", s.strip().lower())).strip()


@SCORERS.register("math")
def verify_math(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    """math_verify equivalence of the prediction (raw and ``$pred$``) to the gold (``$gold$``)."""
    from math_verify import verify

    gold_parsed = _parse(f"${gold}$")
    if not gold_parsed:
        if compat == "official":
            return 1.0  # quirk 1: an unparseable gold counts as correct
        return float(pred is not None and _normalize(pred) == _normalize(gold))
    if pred is None:
        return 0.0
    best = 0.0
    for candidate in (_parse(pred), _parse(f"${pred}$")):
        if candidate:
            try:
                best = max(best, float(verify(gold_parsed, candidate)))
            except Exception:  # noqa: BLE001 - math_verify raises on odd expressions: this candidate does not match
                continue
    return best


def to_float(text: str, compat: Compat = "fixed") -> float | None:
    """official (VLMEvalKit): a trailing % divides by 100, else ``float()``. fixed: also strips thousands
    separators, currency signs and trailing units/words ("1,234", "$5", "42 kg", "3.5 %")."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return float(t.rstrip("%").strip()) / 100
        return float(t)
    except ValueError:
        if compat == "official":
            return None
    m = re.fullmatch(r"[$€£¥]?\s*([-+]?\d{1,3}(?:,\d{3})+|[-+]?\d*\.?\d+)\s*(%|[a-zA-Z]{0,12})\.?", t)
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return value / 100 if m.group(2) == "%" else value


def relaxed_correctness(target: str, prediction: str, compat: Compat = "fixed", tolerance: float = 0.05) -> float:
    """pix2struct relaxed accuracy: numbers within 5% relative error of the target (scales 1, 0.01, 100 tried),
    otherwise case-insensitive exact match. official: the relative error is taken against the prediction."""
    p = to_float(prediction, compat)
    t = to_float(target, compat)
    if p is not None and t is not None:
        for scale in (1.0, 0.01, 100.0):
            ps = p * scale
            if compat == "official":
                ok = abs(t - ps) / abs(ps) <= tolerance if ps != 0 else t == ps  # quirk 2: swapped
            else:
                ok = abs(ps - t) / abs(t) <= tolerance if t != 0 else ps == t
            if ok:
                return 1.0
        return 0.0
    return float(prediction.strip().lower() == target.strip().lower())


def anls(prediction: str, gold: str | list[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity: 1 - dist/max_len when that is >= threshold, else 0."""
    import Levenshtein

    golds = [gold] if isinstance(gold, str) else list(gold)
    best = 0.0
    p = " ".join(prediction.strip().lower().split())
    for gold_text in golds:
        g = " ".join(gold_text.strip().lower().split())
        if not p and not g:
            return 1.0
        sim = 1.0 - Levenshtein.distance(p, g) / max(len(p), len(g))
        best = max(best, sim if sim >= threshold else 0.0)
    return best


@SCORERS.register("chart")
def verify_chart(pred: str | None, gold: str, compat: Compat = "fixed", use_anls: bool = False) -> float:
    """Chart/infographic scoring: max(relaxed accuracy [, ANLS], math_verify)."""
    if pred is None:
        return verify_math(pred, gold, compat) if compat == "official" else 0.0
    score = relaxed_correctness(gold, pred, compat)
    if use_anls:
        score = max(score, anls(pred, gold))
    return max(score, verify_math(pred, gold, compat))


@SCORERS.register("anls_chart")
def verify_info(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    return verify_chart(pred, gold, compat, use_anls=True)


@SCORERS.register("mcq")
def verify_mcq(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    """MCQ letters. official: math_verify on the letter (as the official script); fixed: letter extraction."""
    if compat == "official":
        return verify_math(pred, gold, compat)
    if pred is None:
        return 0.0
    letter = extract_letter(pred) or (pred.strip().strip("().").upper()[:1] if len(pred.strip()) <= 3 else None)
    return float(letter == gold.strip().strip("().").upper())


def scorer_for(benchmark: str, gold: str) -> str:
    """The official routing: names containing 'info' -> chart + ANLS, 'char' -> chart, else math; our addition:
    a single-letter gold on other benchmarks -> mcq."""
    name = benchmark.lower()
    if "info" in name:
        return "anls_chart"
    if "char" in name:
        return "chart"
    if re.fullmatch(r"\(?[A-J]\)?", gold.strip()):
        return "mcq"
    return "math"


def score(response: str, gold: str, scorer: str, compat: Compat = "fixed") -> tuple[str | None, float]:
    """(extracted prediction, score) of one response."""
    pred = extract_answer(response, compat)
    return pred, SCORERS.get(scorer)(pred, gold, compat)
