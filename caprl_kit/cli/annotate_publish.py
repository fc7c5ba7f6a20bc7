"""``caprl annotate publish RUN_DIR OUT_DIR``: parse, call ``annotate.publish``, render."""

from __future__ import annotations

import typer


def annotate_publish(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="A caprl annotate output folder (local or fsspec URL)."),
    out_dir: str = typer.Argument(..., metavar="OUT_DIR", help="The dataset folder to write (new or empty)."),
    row_group_size: str = typer.Option(
        "200MB", "--row-group-size", help="Target uncompressed bytes per Parquet row group (the Hub viewer: 100-300MB)."
    ),
    file_size: str = typer.Option("1GB", "--file-size", help="A data file is closed once it holds this much."),
    embed_media: bool | None = typer.Option(
        None,
        "--embed-media/--no-embed-media",
        help="Media bytes as an Image/Video column (default: when the run stored them; --embed-media reads the "
        "source files otherwise).",
    ),
    include_failed: bool = typer.Option(False, "--include-failed", help="Publish the failed rows too (with status)."),
    partial: bool = typer.Option(False, "--partial", help="Publish a run whose shards are not all finished."),
    name: str | None = typer.Option(None, "--name", help="The dataset card's title (default: the run folder's name)."),
    repo_id: str | None = typer.Option(None, "--repo-id", help="OWNER/NAME the card's load example names."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier publish in OUT_DIR."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    """Write a Hub-ready dataset folder from an annotate run: Parquet under data/ in row groups sized by bytes, the
    media embedded where possible, and a dataset card (README.md) with the captioner, prompt, sampling and counts."""
    from rich.table import Table

    from caprl_kit.annotate.publish import PublishOptions, parse_size, publish
    from caprl_kit.cli import _errors
    from caprl_kit.cli._console import console, out, setup_logging

    with _errors(verbose):
        setup_logging(verbose)
        options = PublishOptions(
            row_group_bytes=parse_size(row_group_size),
            file_bytes=parse_size(file_size),
            embed_media=embed_media,
            include_failed=include_failed,
            partial=partial,
            overwrite=overwrite,
            name=name,
            repo_id=repo_id,
        )
        result = publish(run_dir, out_dir, options)
    groups = result.row_groups
    table = Table(title=f"published: {result.output}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{result.rows:,}")
    table.add_row("media", result.media)
    table.add_row("files", str(len(result.files)))
    table.add_row("row groups", str(len(groups)))
    if groups:
        sizes = [g.bytes for g in groups]
        rows = [g.rows for g in groups]
        table.add_row("row group MB (min-max)", f"{min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f}")
        table.add_row("rows per group (min-max)", f"{min(rows):,}-{max(rows):,}")
    for st, count in sorted(result.left_out.items()):
        table.add_row(f"  left out: {st}", str(count))
    table.add_row("seconds", f"{result.seconds:.1f}")
    out.print(table)
    console.print(f"load it with datasets.load_dataset({out_dir!r}); upload the folder as a Hub dataset repo")
