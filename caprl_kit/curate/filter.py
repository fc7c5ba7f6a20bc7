"""Filter decisions (spec §1.5): keep a question when visual accuracy > min_visual_acc **and** text-only accuracy
< max_text_acc (both strict, as the README states; with 4 rotations: 4/4 with the media and 0/4 without)."""

from __future__ import annotations

from caprl_kit.curate.config import FilterConfig


def decide(visual_acc: float, text_acc: float, cfg: FilterConfig) -> tuple[bool, str]:
    """(keep, reason): reason is ``kept``, ``visual_acc_low``, ``text_acc_high`` or ``both``.

    >>> decide(1.0, 0.0, FilterConfig())
    (True, 'kept')
    >>> decide(0.75, 0.0, FilterConfig())   # 3/4 is not > 0.75
    (False, 'visual_acc_low')
    >>> decide(1.0, 0.25, FilterConfig())   # 1/4 is not < 0.25
    (False, 'text_acc_high')
    """
    low = not visual_acc > cfg.min_visual_acc
    high = not text_acc < cfg.max_text_acc
    if low and high:
        return False, "both"
    if low:
        return False, "visual_acc_low"
    if high:
        return False, "text_acc_high"
    return True, "kept"
