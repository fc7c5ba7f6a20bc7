"""Captions cut at k tokens, for utility@k (eval's ``qa_utility.length_cuts``, training's ``val/utility@256``):
counted and cut in tokens of a tokenizer (the captioner's or the policy's, without special tokens, as the length
reward counts them) or, without one, in whitespace words; and the normalised area under a utility@k curve."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.log import get_logger

log = get_logger(__name__)

_WORD = re.compile(r"\S+")


class CaptionCutter:
    """Counts a caption's length and cuts it to its first k units: tokens of ``tokenizer`` (``name`` says which),
    or whitespace words when there is none.

    >>> c = CaptionCutter()
    >>> c.unit, c.count("a red  circle at the left"), c.cut("a red  circle at the left", 3)
    ('words', 6, 'a red  circle')
    >>> c.cut("a red circle", 5)
    'a red circle'
    """

    def __init__(self, tokenizer: Any = None, name: str | None = None):
        self.tokenizer = tokenizer
        self.name = name if tokenizer is not None else None

    @property
    def unit(self) -> str:
        return "words" if self.tokenizer is None else "tokens"

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def cut(self, text: str, k: int) -> str:
        """The text up to the end of its k-th unit (as written: a fast tokenizer's offsets keep the original
        spacing, another tokenizer decodes the first k ids); the text itself when it has no more than k."""
        if self.tokenizer is None:
            words = list(_WORD.finditer(text))
            return text if len(words) <= k else text[: words[k - 1].end()]
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            return text if len(ids) <= k else str(self.tokenizer.decode(ids[:k], skip_special_tokens=True))
        offsets = enc["offset_mapping"]
        return text if len(offsets) <= k else text[: offsets[k - 1][1]]


def load_cutter(name: str | None, *, key: str, required: bool, trust_remote_code: bool = False) -> CaptionCutter:
    """A cutter in the tokens of ``name``'s tokenizer (a hub id or a local model folder, loaded as the length reward
    loads one). One that cannot be loaded is an error naming ``key`` when ``required``, else whitespace words with
    a warning saying why; no name: whitespace words."""
    if name is None:
        return CaptionCutter()
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - the reason is reported (raised, or logged with the fallback)
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if required:
            raise CaprlError(
                f"{key}: the tokenizer of '{name}' could not be loaded ({why}); name a hub id or a local model "
                "folder holding one, or remove it to count whitespace words"
            ) from None
        log.warning("%s '%s' has no tokenizer that loads (%s): lengths are counted in whitespace words", key, name, why)
        return CaptionCutter()
    return CaptionCutter(tokenizer, name)


def cut_scores(
    scorer: Any,
    captions: Sequence[str],
    qa_lists: Sequence[Any],
    scores: Sequence[float],
    cuts: Sequence[int],
    cutter: CaptionCutter,
) -> tuple[list[list[float]], list[int]]:
    """Per cut, every caption's score with the caption cut at k: the captions longer than k are cut and scored
    again, all cuts in one ``scorer.score`` call; a caption no longer than k is the same caption and keeps its
    full-length score (``scores``). Also each caption's length."""
    lengths = [cutter.count(c) for c in captions]
    jobs = [(ki, i) for ki, k in enumerate(cuts) for i, n in enumerate(lengths) if n > k]
    out = [list(scores) for _ in cuts]
    if jobs:
        again = scorer.score([cutter.cut(captions[i], cuts[ki]) for ki, i in jobs], [qa_lists[i] for _, i in jobs])
        for (ki, i), s in zip(jobs, again.scores):
            out[ki][i] = s
    return out, lengths


def utility_area(points: Sequence[tuple[int, float | None]]) -> float | None:
    """The normalised area under a utility@k curve: the trapezoid rule over log2 k, divided by the span of log2 k,
    so 1.0 is a utility of 1 at every cut (one cut: its utility; a cut without a utility: None).

    >>> utility_area([(128, 0.25), (256, 0.5), (512, 0.75), (1024, 1.0)])
    0.625
    >>> utility_area([(256, 1.0), (1024, 1.0)]), utility_area([(512, 0.4)]), utility_area([(128, None)])
    (1.0, 0.4, None)
    """
    if not points or any(u is None for _, u in points):
        return None
    xy = sorted((math.log2(k), float(u)) for k, u in points if u is not None)
    if len(xy) == 1 or xy[-1][0] == xy[0][0]:
        return sum(y for _, y in xy) / len(xy)
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(xy))
    return area / (xy[-1][0] - xy[0][0])
