"""``caprl``: curate | train | annotate | eval, plus helpers. Thin: parse, call the library, render.

Nothing heavy is imported here: torch, transformers, vllm, ray and verl load only when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import typer
from typer.core import TyperGroup

from caprl_kit.cli.annotate_publish import annotate_publish
from caprl_kit.cli.data_export import data_export
from caprl_kit.cli.eval_judge import eval_judge
from caprl_kit.cli.eval_official import eval_export_official
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue

if TYPE_CHECKING:
    from caprl_kit.rewards.server import RewardServerConfig

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
    "pairs": "Preference pairs for DPO: sample n captions per image, score them with the CapRL reward, pair "
    "the best with the worst (TRL's DPO format).",
}


def _fail(exc: BaseException, verbose: int = 0) -> None:
    """Every error ends here as one message and an exit code: 2 for what the user can fix (``CaprlError``), 1 for
    anything else (one line; ``-vv`` adds the traceback), 130 for Ctrl-C."""
    from rich.markup import escape

    from caprl_kit.cli._console import console

    if isinstance(exc, ConfigError):
        console.print("[bold red]error:[/] invalid config" + (f" {exc.source}" if exc.source else ""), highlight=False)
        for issue in exc.issues:
            console.print(f"  [red]-[/] {escape(issue.render())}", highlight=False)
    elif isinstance(exc, CaprlError):
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    elif isinstance(exc, KeyboardInterrupt):
        console.print("[yellow]interrupted[/]: finished shards are kept; rerun the same command to resume")
        raise typer.Exit(130)
    else:
        if verbose > 1:
            console.print_exception(show_locals=False)
        first = (str(exc).strip().splitlines() or [""])[0]
        console.print(
            f"[bold red]error:[/] {escape(type(exc).__name__)}: {escape(first)} (rerun with -vv for the traceback)",
            highlight=False,
        )
        raise typer.Exit(1)
    raise typer.Exit(2)


@contextmanager
def _claimed(out: str | Path, command: str, *, overwrite: bool = False, option: str = "--out") -> Iterator[None]:
    """A helper command's output claimed as the verbs claim theirs (``io/rundir.prepare_output``): a new or empty
    folder, or one this command made before (``caprl_run.json`` names it); anything else is refused naming the
    path, before any work. The output lock it takes is released when the block ends, however it ends."""
    from caprl_kit.io.lock import output_lock_scope
    from caprl_kit.io.rundir import prepare_output

    with output_lock_scope():
        prepare_output(str(out), command, overwrite=overwrite, same_command=True, option=option)
        yield


@contextmanager
def _errors(verbose: int = 0) -> Iterator[None]:
    """The CLI's one error boundary (typer/click exits pass through)."""
    try:
        yield
    except (typer.Exit, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - turned into one line, never a traceback
        _fail(exc, verbose)


def run_verb(
    verb: str,
    config: str | None,
    overrides: list[str],
    dry_run: bool,
    output: str | None,
    overwrite: bool,
    verbose: int,
    log_file: str | None,
    retry_failed: bool = False,
) -> None:
    """Shared body of the four verbs: load -> (dry run | run with progress) -> summary."""
    from caprl_kit.cli._console import console, out, progress, setup_logging, summary_table
    from caprl_kit.config import dump_config, load_config

    with _errors(verbose):
        setup_logging(verbose, log_file)
        if not config:
            raise ConfigError(
                [ConfigIssue("--config", "missing", "pass --config NAME_OR_PATH (see `caprl pipelines`)")]
            )
        cfg = load_config(config, list(overrides), kind=verb, values={"output_dir": output} if output else None)
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
            report = commands.run(cfg, overwrite=overwrite, retry_failed=retry_failed, progress=bar)
        console.print(summary_table(report))
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}")


class VerbGroup(TyperGroup):
    """A verb with helper sub-commands (``caprl annotate status DIR``): anything that is not one of them runs the
    verb itself, so ``caprl annotate --config X key=value`` and ``caprl annotate --help`` work as before."""

    # ctx: the Context of the click that TyperGroup is built on (typer vendors its own click since 0.2x)
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _verb_app(verb: str, helpers: str = "") -> typer.Typer:
    sub = typer.Typer(
        cls=VerbGroup,
        add_completion=False,
        help=VERB_HELP[verb],
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    sub.command("run", help=VERB_HELP[verb] + (f"\n\nSub-commands: {helpers}" if helpers else ""))(_make_verb(verb))
    app.add_typer(sub, name=verb)
    return sub


def annotate_status(
    directory: str = typer.Argument(..., metavar="DIR", help="An annotate output folder (local or fsspec URL)."),
) -> None:
    """Progress of a running or finished annotate job: shards, items, failures by status, throughput."""
    from rich.table import Table

    from caprl_kit.annotate.pipeline import status
    from caprl_kit.cli._console import out

    with _errors():
        info = status(directory)
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
    for flag, rate in info["caption_flags"].items():
        table.add_row(f"  captions {flag.replace('_', ' ')}", f"{rate:.1%}")
    table.add_row("last shard finished", str(info["last_finished_at"]))
    out.print(table)
    nodes = Table(title="shards per node")
    for col in ("node", "host", "shards", "items", "workers", "GPU ids"):
        nodes.add_column(col, justify="right" if col in ("shards", "items", "workers") else "left")
    for n in info["nodes"]:
        nodes.add_row(
            n["node"],
            str(n["host"]),
            str(n["shards"]),
            str(n["items"]),
            str(n["workers"]),
            ",".join(n["gpu_ids"]) or "-",
        )
    out.print(nodes)


def train_export(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT", help="A verl checkpoint folder (global_step_N)."),
    output: str = typer.Option(
        ..., "--output", "-o", help="Where to write the Hugging Face model folder (new, empty, or a previous export)."
    ),
    python: str | None = typer.Option(
        None,
        "--python",
        help="Interpreter of the environment with verl that runs "
        "verl's model merger (default: the one caprl runs under).",
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    """Export a verl FSDP checkpoint to a Hugging Face model folder (for annotate/eval/serving)."""
    from caprl_kit.cli._console import console, setup_logging
    from caprl_kit.train.pipeline import export_model

    with _errors(verbose):
        setup_logging(verbose)
        export_model(checkpoint, output, python=python)
    console.print(f"exported {checkpoint} -> {output}")


def eval_compare(
    dirs: list[str] = typer.Argument(
        ..., metavar="DIR...", help="Eval output folders to compare (each holds results_latest.json)."
    ),
    output: str = typer.Option("report.html", "--output", "-o", help="The HTML report to write."),
) -> None:
    """Compare eval runs side by side in one HTML report (M_Acc per task, caption lengths, examples)."""
    from caprl_kit.cli._console import console
    from caprl_kit.evaluate.report import claim_report_file, compare
    from caprl_kit.io.fs import atomic_write_text, url_to_fs

    with _errors():
        page = compare(dirs)
        claim_report_file(output)  # a new file, or a report caprl wrote before: never a file of the user's
        fs, path = url_to_fs(output)
        atomic_write_text(fs, path, page)
    console.print(f"report: {output}")


def _make_verb(verb: str) -> Callable[..., None]:
    def command(
        config: str | None = typer.Option(
            None, "--config", "-c", help="Built-in pipeline name (see `caprl pipelines`) or YAML path."
        ),
        overrides: list[str] | None = typer.Argument(
            None, help="Dotted overrides: key.path=value, ~key.path to delete."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and the plan; touch nothing."),
        output: str | None = typer.Option(None, "--output", "-o", help="Output directory (any fsspec URL)."),
        overwrite: bool = typer.Option(
            False, "--overwrite/--resume", help="Discard a previous run instead of resuming it."
        ),
        retry_failed: bool = typer.Option(
            False,
            "--retry-failed",
            help="Redo, in place, the rows of a finished run whose status is a retryable failure (caprl annotate).",
        ),
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
        log_file: str | None = typer.Option(None, "--log-file", help="Also write debug logs to this file."),
    ) -> None:
        run_verb(verb, config, overrides or [], dry_run, output, overwrite, verbose, log_file, retry_failed)

    command.__doc__ = VERB_HELP[verb]
    return command


app.command("curate", help=VERB_HELP["curate"])(_make_verb("curate"))
train_app = _verb_app("train", "export CHECKPOINT --output DIR; pairs --config NAME --output DIR")
train_app.command("export")(train_export)
train_app.command("pairs", help=VERB_HELP["pairs"])(_make_verb("pairs"))
annotate_app = _verb_app("annotate", "status DIR; publish RUN_DIR OUT_DIR")
annotate_app.command("status")(annotate_status)
annotate_app.command("publish")(annotate_publish)
eval_app = _verb_app(
    "eval", "compare DIR [DIR ...] --output report.html; export-official RUN_DIR [--output DIR]; judge RUN_DIR"
)
eval_app.command("compare")(eval_compare)
eval_app.command("export-official")(eval_export_official)
eval_app.command("judge")(eval_judge)


@app.command("serve-reward")
def serve_reward(
    config: str = typer.Option(..., "--config", "-c", help="serve_reward pipeline name or YAML path."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides: key.path=value."),
    host: str | None = typer.Option(None, help="Bind address (default from config: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default from config)."),
    workers: int | None = typer.Option(
        None, help="Server processes sharing the port (default from config: 1); answerer openai or lexical."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Serve the CapRL reward over HTTP (official /get_reward protocol + a typed endpoint)."""
    from caprl_kit.cli._console import console, out, setup_logging
    from caprl_kit.config import dump_config, load_config

    with _errors(verbose):
        setup_logging(verbose)
        values = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
        cfg = cast("RewardServerConfig", load_config(config, list(overrides or []), kind="serve_reward", values=values))
        from caprl_kit import commands

        if dry_run:
            out.print(dump_config(cfg), markup=False, highlight=False)
            for line in commands.plan(cfg):
                out.print(f"- {line}", markup=False, highlight=False)
            return
        console.print(f"reward server on http://{cfg.host}:{cfg.port} (Ctrl-C to stop)")
        commands.run(cfg)


@app.command("pipelines")
def list_pipelines() -> None:
    """List the built-in pipeline recipes (names usable with --config) with what each one does."""
    from rich.table import Table

    from caprl_kit.cli._console import out
    from caprl_kit.config import builtin_pipelines, pipeline_purpose

    table = Table(title="built-in pipelines (caprl <verb> --config NAME)")
    table.add_column("name", no_wrap=True)
    table.add_column("what it does")
    for name in builtin_pipelines():
        table.add_row(name, pipeline_purpose(name))
    out.print(table)


@app.command("demo")
def demo(
    out: Path = typer.Option(
        Path("demo_output"),
        "--out",
        "-o",
        help="Where the demo writes everything (a new or empty folder, or a previous demo run).",
    ),
    seed: int = typer.Option(0, help="Seed of the models, the data and training."),
    n_train: int = typer.Option(200, help="Training images."),
    n_val: int = typer.Option(100, help="Validation images (RL checkpoint selection)."),
    n_test: int = typer.Option(200, help="Held-out test images."),
    sft_steps: int | None = typer.Option(None, help="SFT steps (default: the recipe's)."),
    rl_steps: int | None = typer.Option(None, help="GRPO steps (default: the recipe's)."),
    eval_steps: int | None = typer.Option(None, help="Validate every N GRPO steps (default: the recipe's)."),
    trainers: bool = typer.Option(
        True,
        "--trainers/--no-trainers",
        help="Also train GRPO with the reward served "
        "over HTTP (caprl serve-reward on 127.0.0.1) and DPO on reward-ranked pairs, from "
        "the same warm start (about a third of the demo's run time).",
    ),
    faithfulness: bool = typer.Option(
        False,
        "--faithfulness/--no-faithfulness",
        help="The hacking proof: 80% of the warm start's captions end in a false sentence; every captioner's "
        "claims are checked against the reference caption, and GRPO on QA + faithfulness (per term) is added "
        "(both GRPO arms with the original GRPO's KL penalty, 0.04).",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite/--resume",
        help="Discard the previous demo run in --out (only a folder the demo made) instead of resuming it.",
    ),
    video: bool = typer.Option(
        False,
        "--video",
        help="The video learning proof instead (train/sanity_tiny_video_trl): SFT-only vs SFT + GRPO held-out "
        "accuracy and the video-blind ceiling, in OUTPUT/summary.json (--trainers does not apply).",
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """The offline demo on tiny models built locally: curate -> SFT + GRPO -> annotate -> eval -> report.html."""
    from caprl_kit.cli._console import console, progress, setup_logging
    from caprl_kit.demo import run_demo

    if video:
        _video_demo(out, seed, (n_train, n_val, n_test), (sft_steps, rl_steps, eval_steps), overwrite, verbose)
        return
    with _errors(verbose):
        setup_logging(verbose)
        with progress() as bar:
            summary = run_demo(
                out,
                seed=seed,
                n_train=n_train,
                n_val=n_val,
                n_test=n_test,
                sft_steps=sft_steps,
                rl_steps=rl_steps,
                eval_steps=eval_steps,
                trainers=trainers,
                faithfulness=faithfulness,
                progress=bar,
                overwrite=overwrite,
            )
    ev = summary["eval"]
    console.print(
        f"held-out QA accuracy: SFT + GRPO [bold]{ev['A1_rl']:.3f}[/], SFT only {ev['A0_sft']:.3f}, "
        f"image-blind ceiling {ev['blind_ceiling']:.3f} (gain {ev['gain']:+.3f})"
    )
    if "A2_faithful" in ev:
        rate = {k: "n/a" if v is None else f"{v:.1%}" for k, v in ev["hallucinated_claim_rate"].items()}
        console.print(
            f"hallucinated claims: SFT only {rate['A0_sft']}, SFT + GRPO on QA {rate['A1_rl']}, on QA + "
            f"faithfulness [bold]{rate['A2_faithful']}[/] (its held-out QA accuracy {ev['A2_faithful']:.3f})"
        )
    for key, label in (("grpo_http", "SFT + GRPO, reward over HTTP"), ("dpo", "SFT + DPO on reward-ranked pairs")):
        if key in summary.get("trainers", {}):
            console.print(f"held-out QA accuracy: {label} [bold]{summary['trainers'][key]['accuracy']:.3f}[/]")
    console.print(
        f"curate: {summary['curate']['train']['items_kept']}/{summary['curate']['train']['items_in']} "
        f"training images kept; annotate: {summary['annotate']['ok']} captions"
    )
    console.print(f"report: {summary['report']}")


def _video_demo(
    out: Path, seed: int, counts: tuple[int, int, int], steps: tuple[int | None, ...], overwrite: bool, verbose: int
) -> None:
    from caprl_kit.cli._console import console, progress, setup_logging
    from caprl_kit.demo_video import run_video_proof

    with _errors(verbose):
        setup_logging(verbose)
        with progress() as bar:
            summary = run_video_proof(
                out,
                seed=seed,
                n_train=counts[0],
                n_val=counts[1],
                n_test=counts[2],
                sft_steps=steps[0],
                rl_steps=steps[1],
                eval_steps=steps[2],
                progress=bar,
                overwrite=overwrite,
            )
    ev = summary["eval"]
    console.print(
        f"held-out video QA accuracy: SFT + GRPO [bold]{ev['A1_rl']:.3f}[/], SFT only {ev['A0_sft']:.3f}, "
        f"video-blind ceiling {ev['blind_ceiling']:.3f} (gain {ev['gain']:+.3f}); "
        f"{summary['wall_s']:.0f} s wall, {summary['cpu_s']:.0f} s CPU"
    )
    console.print(f"summary: {Path(summary['output_dir']) / 'summary.json'}")


data_app = typer.Typer(help="Data helpers.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.command("export")(data_export)  # the body: cli/data_export.py


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Directory for train/, val/ and test/ splits (new, empty, or a previous data synth output).",
    ),
    train: int = typer.Option(200, help="Training images."),
    val: int = typer.Option(50, help="Validation images."),
    test: int = typer.Option(50, help="Held-out test images."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same task."),
) -> None:
    """The synthetic sanity task: shapes with known colour/position, MCQs, complete and incomplete captions."""
    from caprl_kit.cli._console import console
    from caprl_kit.synthetic import check_task_options, write_sanity_task

    with _errors():
        check_task_options(n_train=train, n_val=val, n_test=test, seed=seed)
        with _claimed(out, "data synth"):
            paths = write_sanity_task(out, train, val, test, seed)
    for split, path in paths.items():
        console.print(f"{split}: {path}")


models_app = typer.Typer(help="Model helpers.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Directory to write captioner/ and answerer/ into (new, empty, or a previous models tiny output).",
    ),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same weights."),
    answerer_arch: str = typer.Option("qwen2", help="qwen2 or qwen3."),
    tokenizer: str = typer.Option("bpe", help="bpe (byte-level, vLLM-ready) or words (closed word vocabulary)."),
) -> None:
    """Build tiny random-weight Qwen2.5-VL captioner + Qwen text answerer (a few MB, offline, seconds)."""
    from caprl_kit.cli._console import console, setup_logging
    from caprl_kit.models.tiny import build_tiny_models, check_options

    setup_logging(0)
    with _errors():
        check_options(seed, answerer_arch, tokenizer)
        with _claimed(out, "models tiny"):
            paths = build_tiny_models(out, seed=seed, answerer_arch=answerer_arch, tokenizer=tokenizer)
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
