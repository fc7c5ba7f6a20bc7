"""``caprl eval export-official RUN_DIR``: parse, call ``evaluate.official_export``, render."""

from __future__ import annotations

import typer

from caprl_kit.errors import ConfigError, ConfigIssue


def eval_export_official(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="A caprl eval output folder (local or fsspec URL)."),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write the files (default: RUN_DIR/official; new, empty or an earlier export).",
    ),
    step: int = typer.Option(400, "--step", help="The N of _step<N> in the file names (Eval_CapRL.py's --step)."),
    tag: list[str] | None = typer.Option(
        None, "--tag", help="TASK=TAG: the official --tag of a task's file (default: the task name); repeatable."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    """Write the official Eval_CapRL.py stage-2 files (intermediate_generations_<tag>_step<N>.jsonl, every caption
    per item) from an eval run, to score its captions with the official evaluator."""
    from rich.table import Table

    from caprl_kit.cli import _errors
    from caprl_kit.cli._console import console, out, setup_logging
    from caprl_kit.evaluate.official_export import export_official

    with _errors(verbose):
        setup_logging(verbose)
        tags = {}
        for item in tag or []:
            task, sep, name = item.partition("=")
            if not sep or not task or not name:
                raise ConfigError([ConfigIssue("--tag", f"'{item}' is not TASK=TAG", "e.g. --tag chartqa=ChartQA")])
            tags[task] = name
        result = export_official(run_dir, output, step=step, tags=tags)
    table = Table(title=f"official stage-2 files: {result.output}")
    for col in ("task", "file", "items", "captions/item", "not captioned"):
        table.add_column(col, justify="right" if col in ("items", "captions/item", "not captioned") else "left")
    for f in result.files:
        lo, hi = f.captions_per_item
        table.add_row(
            f.task, f.file.rpartition("/")[2], str(f.items), str(lo) if lo == hi else f"{lo}-{hi}", str(f.not_captioned)
        )
    out.print(table)
    for task, why in result.skipped.items():
        console.print(f"[yellow]note:[/] {task} not exported: {why}")
    if result.files:
        console.print(f"score one with: {result.files[0].stage2}")
