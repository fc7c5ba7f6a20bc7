"""Filter decisions over recorded trial outcomes: exact keep/drop, strict thresholds as documented."""

from __future__ import annotations

import pytest

from caprl_kit.curate.config import FilterConfig
from caprl_kit.curate.filter import decide


def acc(correct: list[bool]) -> float:
    return sum(correct) / len(correct)


T, F = True, False


@pytest.mark.parametrize("visual, text, expected", [
    ([T, T, T, T], [F, F, F, F], (True, "kept")),  # 4/4 with the image, 0/4 without: the only kept case at 4 rotations
    ([T, T, T, F], [F, F, F, F], (False, "visual_acc_low")),  # 0.75 is not > 0.75
    ([T, T, T, T], [T, F, F, F], (False, "text_acc_high")),  # 0.25 is not < 0.25
    ([T, T, F, F], [T, T, F, F], (False, "both")),
    ([F, F, F, F], [F, F, F, F], (False, "visual_acc_low")),
    ([T, T, T, T], [T, T, T, T], (False, "text_acc_high")),
])
def test_default_thresholds_on_recorded_trials(visual, text, expected) -> None:
    assert decide(acc(visual), acc(text), FilterConfig()) == expected


def test_thresholds_are_configurable_and_strict() -> None:
    loose = FilterConfig(min_visual_acc=0.5, max_text_acc=0.5)
    assert decide(0.75, 0.25, loose) == (True, "kept")
    assert decide(0.5, 0.25, loose) == (False, "visual_acc_low")
    assert decide(0.75, 0.5, loose) == (False, "text_acc_high")
    # with 8 rotations the default keeps 7/8 visual and 1/8 text-only
    assert decide(7 / 8, 1 / 8, FilterConfig()) == (True, "kept")
