"""The reward-hacking alarm of a training run: the training reward rises over a window of validations while what the
reward stands for falls on the held-out validation captions, either their QA utility with every caption cut at 256
tokens (``val/utility@256``: a caption can pad its way to reward, not to utility in its first 256 tokens) or their
claim precision (``val/claim_precision``: what they say that is true). The decision is a pure function of the run's
validation history (``hacking_alarm``), read back from ``metrics.jsonl`` (``validation_points``); the TRL trainer's
validation feeds it (``train/val_audit.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from caprl_kit.config import ConfigModel

VAL_CUT = 256  #: the cut of the validation captions' utility the alarm watches (``val/utility@256``)
#: the validation metrics the alarm watches -> how its reason names them
WATCHED = {f"val/utility@{VAL_CUT}": f"val utility@{VAL_CUT}", "val/claim_precision": "val claim precision"}
REWARD = "reward"  #: TRL's logged mean training reward (the weighted sum of the terms)
VALIDATION = "val/qa_accuracy"  #: the key every validation record holds
ALARM, REASON, ALARM_REWARD = "monitor/hacking_alarm", "monitor/hacking_reason", "monitor/hacking_reward"


class HackingAlarmConfig(ConfigModel):
    window: int = Field(
        3,
        ge=2,
        description="Validations the trends are fitted over: the last N that have a training reward logged since "
        "the one before",
    )
    min_reward_rise: float = Field(
        0.02,
        ge=0,
        description="How much the training reward must rise over the window (least-squares line, first to last "
        "validation) to count as rising; any rise must be above 0",
    )
    min_drop: float = Field(
        0.02,
        gt=0,
        description="How much val/utility@256 or val/claim_precision must fall over the same window to raise the alarm",
    )


@dataclass(frozen=True)
class ValPoint:
    """One validation: its step, the mean training reward logged since the previous validation (None: none was),
    and its metrics (``WATCHED`` keys; a missing one is None)."""

    step: int
    reward: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)


def fitted_change(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The change of the least-squares line through (xs, ys) from the first x to the last.

    >>> fitted_change([0, 1, 2], [0.1, 0.2, 0.3])
    0.2
    >>> round(fitted_change([10, 20, 30], [0.5, 0.2, 0.5]), 12)
    0.0
    """
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return ys[-1] - ys[0]
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return round(slope * (xs[-1] - xs[0]), 12)


def hacking_alarm(history: Sequence[ValPoint], cfg: HackingAlarmConfig) -> tuple[bool, str | None]:
    """Whether the last ``cfg.window`` validations with a training reward show the reward rising (by more than 0
    and at least ``min_reward_rise``) while a watched validation metric falls by at least ``min_drop`` (each fitted
    by least squares over the steps); the reason names both trends. Fewer validations than the window: no alarm;
    a metric missing at any of them is not judged."""
    points = [p for p in history if p.reward is not None][-cfg.window :]
    if len(points) < cfg.window:
        return False, None
    steps = [float(p.step) for p in points]
    rewards = [float(p.reward) for p in points if p.reward is not None]
    rise = fitted_change(steps, rewards)
    if rise <= 0 or rise < cfg.min_reward_rise:
        return False, None
    falls = []
    for key, label in WATCHED.items():
        values = [p.metrics.get(key) for p in points]
        if any(v is None for v in values):
            continue
        seen = [float(v) for v in values if v is not None]
        drop = -fitted_change(steps, seen)
        if drop >= cfg.min_drop:
            falls.append(f"{label} fell {drop:.3f} ({seen[0]:.3f} -> {seen[-1]:.3f})")
    if not falls:
        return False, None
    return True, (
        f"training reward rose {rise:.3f} ({rewards[0]:.3f} -> {rewards[-1]:.3f}) over steps {points[0].step}-"
        f"{points[-1].step} while {' and '.join(falls)}"
    )


def validation_points(records: Iterable[dict[str, Any]], upto: int | None = None) -> list[ValPoint]:
    """The validation history in a run's metrics records (``metrics.jsonl`` lines, in file order): each validation
    record (the last one of a step wins: a resumed run logs its steps again) with the mean training reward logged
    at the steps from the previous validation's up to its own, excluded (the log of a step is written after the
    validation at its end). ``upto``: only the steps up to it (a resumed run's file may hold later steps of the run
    it resumes).

    >>> validation_points([{"step": 0, "val/qa_accuracy": 0.5}, {"step": 1, "reward": 0.2},
    ...                    {"step": 2, "val/qa_accuracy": 0.6, "val/utility@256": 0.4}, {"step": 2, "reward": 0.4}])
    [ValPoint(step=0, reward=None, metrics={'val/utility@256': None, 'val/claim_precision': None}), \
ValPoint(step=2, reward=0.2, metrics={'val/utility@256': 0.4, 'val/claim_precision': None})]
    """
    vals: dict[int, dict[str, Any]] = {}
    rewards: dict[int, float] = {}
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or (upto is not None and step > upto):
            continue
        if VALIDATION in r:
            vals[step] = r
        if isinstance(r.get(REWARD), (int, float)):
            rewards[step] = float(r[REWARD])
    out, prev = [], None
    for step in sorted(vals):
        got = [v for s, v in rewards.items() if (prev is None or s >= prev) and s < step]
        out.append(ValPoint(step, sum(got) / len(got) if got else None, {k: vals[step].get(k) for k in WATCHED}))
        prev = step
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """A metrics.jsonl file's records (none when it is not there yet; a line cut short by a killed run is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def raised_alarms(records: Iterable[dict[str, Any]], upto: int | None = None) -> dict[int, str]:
    """The steps whose validation raised the alarm, with its reason (the last record of a step wins)."""
    out: dict[int, str] = {}
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or ALARM not in r or (upto is not None and step > upto):
            continue
        if r[ALARM]:
            out[step] = str(r.get(REASON, ""))
        else:
            out.pop(step, None)
    return dict(sorted(out.items()))
