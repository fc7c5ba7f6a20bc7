"""``caprl``: curate | train | annotate | eval, plus helpers. Thin: parse, call the library, render.

Nothing heavy is imported here: torch, transformers, vllm, ray and verl load only when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue

app = typer.Typer(
    name="caprl",
    help="CapRL end to end: curate verifiable MCQs, train captioners with GRPO, annotate at scale, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

VERB_HELP = {
    "curate": "Generate and filter multiple-choice questions from images/videos into a training set.",
    "train": "Train a captioner with GRPO on the CapRL reward (TRL on one machine, verl on a cluster).",
    "annotate": "Caption images/videos at scale into resumable Parquet shards.",
    "eval": "Evaluate captioners Prism-style: answer benchmark questions from captions alone.",
}


def _fail(exc: BaseException) -> None:
    from rich.markup import escape

    from caprl_kit.cli._console import console

    if isinstance(exc, ConfigError):
        console.print("[bold red]error:[/] invalid config" + (f" {exc.source}" if exc.source else ""), highlight=False)
        for issue in exc.issues:
            console.print(f"  [red]-[/] {escape(issue.render())}", highlight=False)
    else:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(2)


def run_verb(
    verb: str,
    config: Optional[str],
    overrides: list[str],
    dry_run: bool,
    output: Optional[str],
    overwrite: bool,
    verbose: int,
    log_file: Optional[str],
) -> None:
    """Shared body of the four verbs: load -> (dry run | run with progress) -> summary."""
    from caprl_kit.cli._console import console, out, progress, setup_logging, summary_table
    from caprl_kit.config import dump_config, load_config

    setup_logging(verbose, log_file)
    try:
        if verb == "annotate" and overrides[:1] == ["status"]:
            return annotate_status(overrides[1:])
        if verb == "train" and overrides[:1] == ["export"]:
            return train_export(overrides[1:], output)
        if verb == "eval" and overrides[:1] == ["compare"]:
            return eval_compare(overrides[1:] + ([f"out={output}"] if output else []))
        if not config:
            raise ConfigError([ConfigIssue("--config", "missing", "pass --config NAME_OR_PATH (see `caprl pipelines`)")])
        extra = list(overrides)
        if output:
            extra.append(f"output_dir={output}")
        cfg = load_config(config, extra, kind=verb)
        if not dry_run and not cfg.output_dir:
            raise ConfigError([ConfigIssue("output_dir", "no output directory", "pass --output DIR or set output_dir")])
        from caprl_kit import commands

        if dry_run:
            out.print("# resolved config", style="bold")
            out.print(dump_config(cfg), markup=False, highlight=False)
            out.print("# plan", style="bold")
            for line in commands.plan(cfg):
                out.print(f"- {line}", markup=False, highlight=False)
            return
        with progress() as bar:
            report = commands.run(cfg, overwrite=overwrite, progress=bar)
        console.print(summary_table(report))
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}")
    except CaprlError as exc:
        _fail(exc)


def annotate_status(args: list[str]) -> None:
    """`caprl annotate status DIR`: progress of a running or finished annotate job."""
    from rich.table import Table

    from caprl_kit.annotate.pipeline import status
    from caprl_kit.cli._console import out

    if len(args) != 1:
        raise ConfigError([ConfigIssue("status", "usage: caprl annotate status DIR")])
    info = status(args[0])
    table = Table(title=f"caprl {info['command']}: {info['output_dir']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("shards", f"{info['shards_done']} / {info['shards_total']}")
    table.add_row("items", f"{info['items_done']} / {info['items_total']}")
    table.add_row("ok / failed", f"{info['ok']} / {info['failed']}")
    for k, v in sorted(info["status_counts"].items()):
        if k != "ok":
            table.add_row(f"  {k}", str(v))
    table.add_row("completion tokens", f"{info['completion_tokens']:,}")
    table.add_row("items/s (shard time)", f"{info['items_per_s']:.2f}")
    table.add_row("last shard finished", str(info["last_finished_at"]))
    out.print(table)


def train_export(args: list[str], output: Optional[str]) -> None:
    """`caprl train export CHECKPOINT --output DIR`: verl FSDP checkpoint -> Hugging Face directory."""
    from caprl_kit.cli._console import console
    from caprl_kit.train.pipeline import export_checkpoint

    if len(args) != 1 or not output:
        raise ConfigError([ConfigIssue("export", "usage: caprl train export CHECKPOINT_DIR --output HF_DIR")])
    export_checkpoint(args[0], output)
    console.print(f"exported {args[0]} -> {output}")


def eval_compare(args: list[str]) -> None:
    """`caprl eval compare DIR DIR ... --out report.html` (the out path may also be given as out=PATH)."""
    from caprl_kit.cli._console import console
    from caprl_kit.evaluate.report import compare
    from caprl_kit.io.fs import atomic_write_text, url_to_fs

    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), "report.html")
    dirs = [a for a in args if not a.startswith("out=")]
    if not dirs:
        raise ConfigError([ConfigIssue("compare", "usage: caprl eval compare DIR [DIR ...] [out=report.html]")])
    fs, path = url_to_fs(out)
    atomic_write_text(fs, path, compare(dirs))
    console.print(f"report: {out}")


def _make_verb(verb: str) -> Callable[..., None]:
    def command(
        config: Optional[str] = typer.Option(None, "--config", "-c", help="Built-in pipeline name (see `caprl pipelines`) or YAML path."),
        overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides: key.path=value, ~key.path to delete."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and the plan; touch nothing."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Output directory (any fsspec URL)."),
        overwrite: bool = typer.Option(False, "--overwrite/--resume", help="Discard a previous run instead of resuming it."),
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
        log_file: Optional[str] = typer.Option(None, "--log-file", help="Also write debug logs to this file."),
    ) -> None:
        run_verb(verb, config, overrides or [], dry_run, output, overwrite, verbose, log_file)

    command.__doc__ = VERB_HELP[verb]
    return command


for _verb in ("curate", "train", "annotate", "eval"):
    app.command(_verb, help=VERB_HELP[_verb])(_make_verb(_verb))


@app.command("serve-reward")
def serve_reward(
    config: str = typer.Option(..., "--config", "-c", help="serve_reward pipeline name or YAML path."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides: key.path=value."),
    host: Optional[str] = typer.Option(None, help="Bind address (default from config: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default from config)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Serve the CapRL reward over HTTP (official /get_reward protocol + a typed endpoint)."""
    from caprl_kit.cli._console import console, out, setup_logging
    from caprl_kit.config import dump_config, load_config

    setup_logging(verbose)
    try:
        extra = list(overrides or []) + ([f"host={host}"] if host else []) + ([f"port={port}"] if port else [])
        cfg = load_config(config, extra, kind="serve_reward")
        from caprl_kit import commands

        if dry_run:
            out.print(dump_config(cfg), markup=False, highlight=False)
            for line in commands.plan(cfg):
                out.print(f"- {line}", markup=False, highlight=False)
            return
        console.print(f"reward server on http://{cfg.host}:{cfg.port} (Ctrl-C to stop)")
        commands.run(cfg)
    except CaprlError as exc:
        _fail(exc)


@app.command("pipelines")
def list_pipelines() -> None:
    """List the built-in pipeline recipes (names usable with --config)."""
    from caprl_kit.cli._console import out
    from caprl_kit.config import builtin_pipelines

    for name in builtin_pipelines():
        out.print(name, markup=False, highlight=False)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo_output"), "--out", "-o", help="Where the demo writes everything."),
    seed: int = typer.Option(0, help="Seed of the models, the data and training."),
    n_train: int = typer.Option(200, help="Training images."),
    n_val: int = typer.Option(100, help="Validation images (RL checkpoint selection)."),
    n_test: int = typer.Option(200, help="Held-out test images."),
    sft_steps: Optional[int] = typer.Option(None, help="SFT steps (default: the recipe's)."),
    rl_steps: Optional[int] = typer.Option(None, help="GRPO steps (default: the recipe's)."),
    eval_steps: Optional[int] = typer.Option(None, help="Validate every N GRPO steps (default: the recipe's)."),
    overwrite: bool = typer.Option(False, "--overwrite/--resume", help="Redo finished steps instead of resuming."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """The offline demo on tiny models built locally: curate -> SFT + GRPO -> annotate -> eval -> report.html."""
    from caprl_kit.cli._console import console, progress, setup_logging
    from caprl_kit.demo import run_demo

    setup_logging(verbose)
    try:
        with progress() as bar:
            summary = run_demo(out, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, sft_steps=sft_steps,
                               rl_steps=rl_steps, eval_steps=eval_steps, progress=bar, overwrite=overwrite)
    except CaprlError as exc:
        _fail(exc)
    ev = summary["eval"]
    console.print(f"held-out QA accuracy: SFT + GRPO [bold]{ev['A1_rl']:.3f}[/], SFT only {ev['A0_sft']:.3f}, "
                  f"image-blind ceiling {ev['blind_ceiling']:.3f} (gain {ev['gain']:+.3f})")
    console.print(f"curate: {summary['curate']['train']['items_kept']}/{summary['curate']['train']['items_in']} "
                  f"training images kept; annotate: {summary['annotate']['ok']} captions")
    console.print(f"report: {summary['report']}")


data_app = typer.Typer(help="Data helpers.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for train/, val/ and test/ splits."),
    train: int = typer.Option(200, help="Training images."),
    val: int = typer.Option(50, help="Validation images."),
    test: int = typer.Option(50, help="Held-out test images."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same task."),
) -> None:
    """The synthetic sanity task: shapes with known colour/position, MCQs, complete and incomplete captions."""
    from caprl_kit.cli._console import console
    from caprl_kit.synthetic import write_sanity_task

    for split, path in write_sanity_task(out, train, val, test, seed).items():
        console.print(f"{split}: {path}")


models_app = typer.Typer(help="Model helpers.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write captioner/ and answerer/ into."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same weights."),
    answerer_arch: str = typer.Option("qwen2", help="qwen2 or qwen3."),
    tokenizer: str = typer.Option("bpe", help="bpe (byte-level, vLLM-ready) or words (closed word vocabulary)."),
) -> None:
    """Build tiny random-weight Qwen2.5-VL captioner + Qwen text answerer (a few MB, offline, seconds)."""
    from caprl_kit.cli._console import console, setup_logging
    from caprl_kit.models.tiny import build_tiny_models

    setup_logging(0)
    try:
        paths = build_tiny_models(out, seed=seed, answerer_arch=answerer_arch, tokenizer=tokenizer)
    except CaprlError as exc:
        _fail(exc)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


@app.command("version")
def version() -> None:
    """Print caprl-kit's version."""
    from caprl_kit import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
