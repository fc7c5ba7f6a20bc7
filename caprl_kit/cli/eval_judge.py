"""``caprl eval judge RUN_DIR``: parse, call ``evaluate.judge_run``, render."""

from __future__ import annotations

import typer


def eval_judge(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="A caprl eval output folder (local)."),
    overrides: list[str] | None = typer.Argument(
        None, help="Dotted overrides of the run's config, e.g. judge.backend.openai.base_url=URL judge.backend.model=M."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite/--resume", help="Discard the verdicts stored in RUN_DIR and judge every answer again."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    """Judge a finished eval run's open-ended answers (MMVU, MMBench-Video) through its judge (an OpenAI-compatible
    endpoint), then write its results again; no captioner or answerer is loaded (a run made with judge.skip=true)."""
    from caprl_kit.cli import _errors
    from caprl_kit.cli._console import console, progress, setup_logging, summary_table
    from caprl_kit.evaluate.judge_run import judge_run, run_config

    with _errors(verbose):
        setup_logging(verbose)
        cfg = run_config(run_dir, overrides or [])
        with progress() as bar:
            report = judge_run(cfg, overwrite=overwrite, progress=bar)
    console.print(summary_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
