"""The CLI's single Rich console: logging handler, progress bars, summary tables, errors -> exit codes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, emoji=False)  # ":llama:" in a model name stays text
out = Console(emoji=False)  # stdout: dry-run configs and plans, for piping


def setup_logging(verbose: int = 0, log_file: str | None = None) -> None:
    # our Rich progress replaces the libraries' own bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger("caprl_kit")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    handler.setLevel(level)
    root.addHandler(handler)
    if log_file:
        try:
            fh = logging.FileHandler(log_file)
        except OSError as exc:
            from caprl_kit.errors import CaprlError

            raise CaprlError(
                f"--log-file {log_file}: {exc.strerror or exc}; its folder must exist and be writable"
            ) from exc
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    root.propagate = False


class RichProgress:
    """Implements caprl_kit.commands.Progress: one bar per stage with items/s, ETA, failures and tokens/s."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._stats: dict[str, dict[str, float]] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, stage: str, total: int | None, completed: int = 0) -> None:
        self._stats[stage] = {"t0": time.perf_counter(), "items": 0, "tokens": 0, "failed": 0}
        self._tasks[stage] = self._progress.add_task(stage, total=total, completed=completed, rate="", failed=0)

    def advance(self, stage: str, items: int = 1, failed: int = 0, tokens: int = 0) -> None:
        if stage not in self._tasks:
            self.start(stage, None)
        s = self._stats[stage]
        s["items"] += items
        s["tokens"] += tokens
        s["failed"] += failed
        dt = max(time.perf_counter() - s["t0"], 1e-9)
        rate = f"{s['items'] / dt:.1f} it/s"
        if s["tokens"]:
            rate += f" {s['tokens'] / dt:.0f} tok/s"
        self._progress.update(self._tasks[stage], advance=items, rate=rate, failed=int(s["failed"]))

    def finish(self, stage: str) -> None:
        if stage in self._tasks:
            task = self._progress.tasks[self._tasks[stage]]
            if task.total is None:
                self._progress.update(self._tasks[stage], total=task.completed)


@contextmanager
def progress() -> Iterator[RichProgress]:
    with RichProgress() as p:
        yield p


def summary_table(report) -> Table:
    table = Table(title=f"caprl {report.command}: summary", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("items", str(report.n_items))
    table.add_row("ok", f"[green]{report.n_ok}")
    table.add_row("failed", f"[red]{report.n_failed}" if report.n_failed else "0")
    table.add_row("shards written / skipped", f"{report.shards_done} / {report.shards_skipped}")
    table.add_row("time", f"{report.duration_s:.1f} s")
    for status, count in sorted(report.status_counts.items()):
        if status != "ok":
            table.add_row(f"  status {status}", str(count))
    for name, value in sorted(report.metrics.items()):
        table.add_row(name, f"{value:,.2f}" if isinstance(value, float) else str(value))
    for name, where in report.outputs.items():
        table.add_row(name, where)
    return table
