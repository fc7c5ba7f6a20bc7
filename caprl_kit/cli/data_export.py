"""``caprl data export``: a caprl run -> the files a trainer or a caption benchmark reads. Thin: parse, call
``caprl_kit.exports.export``, render its report."""

from __future__ import annotations

import typer

from caprl_kit.exports.formats import FORMATS


def data_export(
    run_dir: str = typer.Argument(
        ..., metavar="RUN_DIR", help="A caprl run: curate, train pairs, annotate or eval output folder."
    ),
    fmt: str = typer.Option(..., "--format", "-f", help=f"Export format: {', '.join(FORMATS.names())}."),
    output: str = typer.Option(
        ..., "--output", "-o", help="Folder to write (new, empty, or a previous export, whose files are replaced)."
    ),
    media: str | None = typer.Option(
        None,
        "--media",
        help="link (default: rows name local files where they are, relative to the export folder; embedded bytes "
        "are written to media/) or copy (every medium copied into media/: a self-contained folder).",
    ),
    captions: str | None = typer.Option(
        None,
        "--captions",
        help="Annotate runs with n > 1 captions per item: all (one row per caption; the trainers' default) or first "
        "(benchmark submissions always take the first).",
    ),
    lmms_task: str | None = typer.Option(
        None, "--lmms-task", help="--format lmms_eval: the lmms-eval task the captions are for (e.g. detailcaps)."
    ),
    doc_ids: str | None = typer.Option(
        None,
        "--doc-ids",
        help="--format lmms_eval: JSON {image file name or item key: doc_id} (default: the item's input order).",
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    """Export a caprl run for LLaMA-Factory, ms-swift or EasyR1, or as a CapArena-Auto, CapMAS or lmms-eval
    submission (docs/exports.md)."""
    from rich.markup import escape

    from caprl_kit.cli import _errors
    from caprl_kit.cli._console import console, setup_logging
    from caprl_kit.exports import export

    with _errors(verbose):
        setup_logging(verbose)
        report = export(fmt, run_dir, output, media=media, captions=captions, lmms_task=lmms_task, doc_ids=doc_ids)
    console.print(f"exported {escape(report.run)} ({report.kind} run) as {report.format} -> {escape(report.output)}")
    for name, rows in report.files.items():
        console.print(f"  {escape(name)}" + (f": {rows} row(s)" if rows else ""), highlight=False)
    if report.media_written:
        console.print(f"  media/: {len(report.media_written)} file(s)")
    for why, n in report.skipped.items():
        console.print(f"  [yellow]left out[/]: {n} {escape(why)}", highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
