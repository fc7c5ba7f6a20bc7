"""Prism scorers (spec §5.1): boxed-answer extraction, math_verify, relaxed accuracy, ANLS, MCQ letters.

``compat="fixed"`` (the default) is our corrected scoring; ``compat="official"`` reproduces the official evaluator
(``Eval_CapRL.py`` stage 2) case for case so published numbers can be matched: its answer regex, ``math_verify``
called as it calls it (LaTeX extraction only, first match), relaxed accuracy on math_verify's rendering of the
answer with the error taken against the prediction, its ANLS, and its routing by the benchmark file's path.
docs/eval.md lists every difference between the two, each with an example.
"""

from __future__ import annotations

import ast
import re
import threading
from functools import lru_cache
from typing import Any, Literal

from caprl_kit.mcq.options import extract_letter
from caprl_kit.registry import Registry

Compat = Literal["fixed", "official"]
SCORERS = Registry("scorer")

_OFFICIAL_BOXED = re.compile(r"</think>\s*<answer>.*?\\boxed{(.*)}.*?</answer>", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
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


def _timeout() -> int | None:
    """math_verify's 5 s limits (its default) work by SIGALRM, which only the main thread may set: none elsewhere,
    so a scorer run in a worker thread parses instead of failing every expression."""
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse(expr: str) -> tuple[Any, ...]:
    from math_verify import parse

    try:
        return tuple(parse(expr, parsing_timeout=_timeout()))
    except Exception:  # noqa: BLE001 - math_verify raises on odd LaTeX; treat as unparseable
        return ()


@lru_cache(maxsize=4096)
def _latex_first(expr: str) -> tuple[Any, ...]:
    """math_verify's parse as the official evaluator calls it: LaTeX extraction only, the first match."""
    from math_verify import LatexExtractionConfig, parse

    try:
        found = parse(
            expr,
            extraction_mode="first_match",
            extraction_config=[LatexExtractionConfig()],
            parsing_timeout=_timeout(),
        )
    except Exception:  # noqa: BLE001 - math_verify raises on odd LaTeX; treat as unparseable
        return ()
    return tuple(found)


def _normalize(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s.%-]", "", s.strip().lower())).strip()


@SCORERS.register("math")
def verify_math(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    """math_verify equivalence of the prediction (raw and ``$pred$``) to the gold (``$gold$``); a gold it cannot
    parse falls back to a normalised string comparison. official: see ``official_math``."""
    from math_verify import verify

    if compat == "official":
        return official_math(pred, gold)
    gold_parsed = _parse(f"${gold}$")
    if not gold_parsed:
        return float(pred is not None and _normalize(pred) == _normalize(gold))
    if pred is None:
        return 0.0
    best = 0.0
    for candidate in (_parse(pred), _parse(f"${pred}$")):
        if candidate:
            try:
                best = max(best, float(verify(list(gold_parsed), list(candidate), timeout_seconds=_timeout())))
            except Exception:  # noqa: BLE001 - math_verify raises on odd expressions: this candidate does not match
                continue
    return best


def to_float(text: str, compat: Compat = "fixed") -> float | None:
    """fixed: ``float()`` of the stripped text, a trailing % divided by 100, also past thousands separators,
    currency signs and trailing units/words ("1,234", "$5", "42 kg", "3.5 %"). official (VLMEvalKit): the text as
    it is, a trailing % divided by 100, else ``float()``."""
    if compat == "official":
        try:
            return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)
        except ValueError:
            return None
    t = text.strip()
    try:
        if t.endswith("%"):
            return float(t.rstrip("%").strip()) / 100
        return float(t)
    except ValueError:
        pass
    m = re.fullmatch(r"[$€£¥]?\s*([-+]?\d{1,3}(?:,\d{3})+|[-+]?\d*\.?\d+)\s*(%|[a-zA-Z]{0,12})\.?", t)
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return value / 100 if m.group(2) == "%" else value


def relaxed_correctness(target: str, prediction: str, compat: Compat = "fixed", tolerance: float = 0.05) -> float:
    """pix2struct relaxed accuracy: numbers within 5% relative error of the target (scales 1, 0.01, 100 tried),
    otherwise case-insensitive exact match. official: one comparison as the official evaluator makes it, the
    relative error taken against the (stripped) prediction, a prediction of 0 compared as text, no scales (its
    chart scorer tries them)."""
    if compat == "official":
        pred = prediction.strip()
        p, t = to_float(pred, compat), to_float(target, compat)
        if t is not None and p:
            return float(abs(t - p) / abs(p) <= tolerance)
        return float(pred.lower() == target.lower())
    p, t = to_float(prediction, compat), to_float(target, compat)
    if p is not None and t is not None:
        for scale in (1.0, 0.01, 100.0):
            ps = p * scale
            close = abs(ps - t) / abs(t) <= tolerance if t != 0 else ps == t
            if close:
                return 1.0
        return 0.0
    return float(prediction.strip().lower() == target.strip().lower())


def anls(prediction: str, gold: str | list[str], threshold: float = 0.5, compat: Compat = "fixed") -> float:
    """Average normalised Levenshtein similarity: 1 - dist/max_len when that is >= threshold, else 0; the distance
    is over the stripped, lower-cased, whitespace-collapsed texts. fixed: max_len of those texts; official: of
    the texts as given."""
    import Levenshtein

    golds = [gold] if isinstance(gold, str) else list(gold)
    best = 0.0
    p = " ".join(prediction.strip().lower().split())
    for gold_text in golds:
        g = " ".join(gold_text.strip().lower().split())
        if compat == "official":
            longest = max(len(gold_text.upper()), len(prediction.upper()))
            sim = 1.0 - (Levenshtein.distance(p, g) / longest if longest else 0.0)
        elif not p and not g:
            return 1.0
        else:
            sim = 1.0 - Levenshtein.distance(p, g) / max(len(p), len(g))
        best = max(best, sim if sim >= threshold else 0.0)
    return best


def official_math(pred: str | None, gold: str) -> float:
    """The official math scorer: ``$gold$`` parsed LaTeX-only, first match; a gold that yields nothing scores 1.0.
    Otherwise 1.0 when the extracted text equals the gold's rendering or ``$pred$`` (parsed the same way) verifies
    against it, math_verify taking the prediction as its reference."""
    from math_verify import verify

    gold_parsed = list(_latex_first(f"${gold}$"))
    if not gold_parsed:
        return 1.0
    text = pred or ""
    try:
        as_text = verify(text, gold_parsed, timeout_seconds=_timeout())
        as_math = verify(list(_latex_first(f"${text}$")), gold_parsed, timeout_seconds=_timeout())
    except Exception:  # noqa: BLE001 - a comparison math_verify cannot make scores 0, as the official evaluator has it
        return 0.0
    return float(as_text or as_math)


def gold_alternatives(gold: str) -> list[str]:
    """The chart scorers' accepted answers: a gold written as a Python list literal (``['a', 'b']``, as a JSON
    list answer reads once made text) is each of its items (as ``str``), any other gold is itself."""
    try:
        value = ast.literal_eval(gold)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return [gold]
    return [str(v) for v in value] if isinstance(value, list) else [gold]


def official_chart(pred: str | None, gold: str, use_anls: bool = False) -> float:
    """The official chart scorer (without its math half): relaxed accuracy on math_verify's rendering of
    ``$pred$`` (LaTeX-only, first match; "" when it yields nothing), not on the extracted text. A rendering that
    ``float()`` reads is tried at scales 1, 0.01 and 100 (each rescaled value written back as text); any other is
    compared to the gold as it is. ``use_anls`` adds ANLS on the same rendering."""
    parsed = _latex_first(f"${pred or ''}$")
    rendered = str(parsed[-1]) if parsed else ""
    golds = gold_alternatives(gold)
    if not golds:  # a gold of "[]": the official evaluator stops with an error; nothing can match it
        return 0.0
    try:
        value = float(rendered)
    except ValueError:
        candidates = [rendered]
    else:
        candidates = [str(scale * value) for scale in (1, 0.01, 100)]
    score = max(relaxed_correctness(g, c, "official") for c in candidates for g in golds)
    if use_anls:
        score = max(score, anls(rendered, golds, compat="official"))
    return score


@SCORERS.register("chart")
def verify_chart(pred: str | None, gold: str, compat: Compat = "fixed", use_anls: bool = False) -> float:
    """Chart/infographic scoring: max(relaxed accuracy [, ANLS], math_verify) over the gold's alternatives
    (``gold_alternatives``). official: max(``official_chart``, ``official_math``)."""
    if compat == "official":
        return max(official_chart(pred, gold, use_anls), official_math(pred, gold))
    if pred is None:
        return 0.0
    score = 0.0
    for accepted in gold_alternatives(gold) or [gold]:
        score = max(score, relaxed_correctness(accepted, pred, compat), verify_math(pred, accepted, compat))
        if use_anls:
            score = max(score, anls(pred, accepted))
    return score


@SCORERS.register("anls_chart")
def verify_info(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    return verify_chart(pred, gold, compat, use_anls=True)


@SCORERS.register("mcq")
def verify_mcq(pred: str | None, gold: str, compat: Compat = "fixed") -> float:
    """MCQ letters. fixed: the extracted option letter; official: ``official_math`` (it has no letter scorer)."""
    if compat == "official":
        return official_math(pred, gold)
    if pred is None:
        return 0.0
    pred = _TEXT_MACRO.sub(r"\1", pred)  # \text{B} -> B
    letter = extract_letter(pred) or (pred.strip().strip("().").upper()[:1] if len(pred.strip()) <= 3 else None)
    return float(letter == gold.strip().strip("().").upper())


def scorer_for(benchmark: str, gold: str, compat: Compat = "fixed", path: str | None = None) -> str:
    """The scorer ``auto`` picks. official (as the official evaluator, from its ``--data-path``): ``path`` (else the
    name) lower-cased containing 'info' -> anls_chart, 'char' -> chart, else math. fixed: the same on the task
    name, and a single-letter gold on other tasks -> mcq."""
    name = (path if compat == "official" and path else benchmark).lower()
    if "info" in name:
        return "anls_chart"
    if "char" in name:
        return "chart"
    if compat == "fixed" and re.fullmatch(r"\(?[A-J]\)?", gold.strip()):
        return "mcq"
    return "math"


def score(response: str, gold: str, scorer: str, compat: Compat = "fixed") -> tuple[str | None, float]:
    """(extracted prediction, score) of one response."""
    pred = extract_answer(response, compat)
    return pred, SCORERS.get(scorer)(pred, gold, compat)
