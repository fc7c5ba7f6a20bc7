"""utility@k (``qa_utility.length_cuts``): the held-out QA utility again with every caption cut at k tokens, so a
captioner whose score comes from running long is told apart from one that says what matters first. The captions
already made are cut (no new captioning) and the cut ones answered again through the task's own scorer, all cuts in
one batch; per cut the utility (M_Acc over the cut captions), the curve's normalised area over log2 k, beside the
full-length utility, the mean caption length and, with ``faithfulness:``, the claim precision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.length_cuts import CaptionCutter, cut_scores, load_cutter, utility_area
from caprl_kit.progress import Progress


def eval_cutter(cfg: EvalConfig) -> CaptionCutter:
    """What the cuts count in: ``qa_utility.length_tokenizer`` (an error when it does not load), else the captioner
    model's tokenizer (whitespace words, with a warning, when it has none that loads), else whitespace words."""
    qu = cfg.qa_utility
    assert qu is not None, "utility@k is part of qa_utility"
    if qu.length_tokenizer is not None:
        return load_cutter(qu.length_tokenizer, key="qa_utility.length_tokenizer", required=True)
    return load_cutter(
        cfg.captioner.model, key="captioner.model", required=False, trust_remote_code=cfg.captioner.trust_remote_code
    )


def m_acc(index: Sequence[tuple[str, int]], scores: Sequence[float]) -> float | None:
    """Mean over items of the mean over their captions (``index``: each score's (item, caption index)).

    >>> m_acc([("a", 0), ("a", 1), ("b", 0)], [1.0, 0.0, 1.0])
    0.75
    """
    per: dict[str, list[float]] = {}
    for (item, _), s in zip(index, scores):
        per.setdefault(item, []).append(s)
    return sum(sum(v) / len(v) for v in per.values()) / len(per) if per else None


def utility_at_k(
    cfg: EvalConfig,
    scorer: Any,
    captions: Sequence[str],
    qa_lists: Sequence[Any],
    index: Sequence[tuple[str, int]],
    scores: Sequence[float],
    progress: Progress,
    claim_precision: float | None = None,
) -> dict[str, Any] | None:
    """The task's utility@k (eval_results ``utility_at_k``) from its scored captions (``index``: each one's (item,
    caption index), ``scores``: its full-length score); None when ``length_cuts`` is empty."""
    qu = cfg.qa_utility
    assert qu is not None, "utility@k is part of qa_utility"
    if not qu.length_cuts:
        return None
    cuts = sorted(qu.length_cuts)
    cutter = eval_cutter(cfg)
    progress.start("qa utility@k", total=len(cuts))
    per_cut, lengths = cut_scores(scorer, captions, qa_lists, scores, cuts, cutter)
    progress.advance("qa utility@k", items=len(cuts))
    progress.finish("qa utility@k")
    utilities = [m_acc(index, s) for s in per_cut]
    return {
        "unit": cutter.unit,
        "tokenizer": cutter.name,
        "cuts": [{"k": k, "utility": u, "n_cut": sum(n > k for n in lengths)} for k, u in zip(cuts, utilities)],
        "area": utility_area(list(zip(cuts, utilities))),
        "full": m_acc(index, scores),
        "mean_length": sum(lengths) / len(lengths) if lengths else None,
        "n_captions": len(captions),
        "claim_precision": claim_precision,
    }


def check_length_tokenizer(cfg: EvalConfig) -> None:
    """``qa_utility.length_tokenizer`` loads: checked before anything is written."""
    qu = cfg.qa_utility
    if qu is not None and qu.length_cuts and qu.length_tokenizer is not None:
        eval_cutter(cfg)
