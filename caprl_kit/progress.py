"""What a long job reports: live progress (``Progress``: the CLI renders it, the library default ignores it) and
the ``RunReport`` a command returns. A module of its own so that runners and stages never import the command
dispatcher (``caprl_kit.commands``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    """What long jobs report while they run. The CLI renders it with Rich; the library default ignores it."""

    def start(self, stage: str, total: int | None, completed: int = 0) -> None: ...

    def advance(self, stage: str, items: int = 1, failed: int = 0, tokens: int = 0) -> None: ...

    def finish(self, stage: str) -> None: ...


class NullProgress:
    def start(self, stage: str, total: int | None, completed: int = 0) -> None:
        pass

    def advance(self, stage: str, items: int = 1, failed: int = 0, tokens: int = 0) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


@dataclass
class RunReport:
    """What a run did, for the CLI's summary table and for callers."""

    command: str
    output_dir: str | None
    n_items: int = 0
    n_ok: int = 0
    n_failed: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    duration_s: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
