"""caprl curate: generate -> parse -> answer (sharded, resumable, each stage on its own) -> export.

``run(cfg)`` is exactly what ``caprl curate --config ...`` does. Stage outputs live in ``OUTPUT/{generate,parse,
answer}/`` (shards + sidecars, each stage with its own manifest and config hash, so changing the answerer redoes
only the answer stage), the final products in ``OUTPUT/dataset/``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from caprl_kit.config import config_hash
from caprl_kit.curate.config import INPUT_PROMPT, CurateConfig
from caprl_kit.curate.stages import STAGES, engines_of, generated_shards, make_worker, stage_dir
from caprl_kit.errors import CaprlError
from caprl_kit.io.empty import describe as describe_empty
from caprl_kit.io.readers import detect_format, input_label, iter_items
from caprl_kit.io.shards import iter_shards
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.runners.driver import Stage, begin, command, fingerprint_items, run_stage

log = get_logger(__name__)
#: drop reasons that are the filter doing its job, not failures
FILTERED = frozenset({"no_question_kept", "no_questions"})


def stage_hash(cfg: CurateConfig, stage: str) -> str:
    """The config a stage's output depends on (and every earlier stage's)."""
    parts: dict[str, Any] = {
        "input": cfg.input,
        "import_mode": cfg.import_mode,
        "import_column": cfg.import_column,
        "media": cfg.media,
        "seed": cfg.seed,
        "generate": cfg.generate,
    }
    if stage in ("parse", "answer"):
        parts["parse"] = True
    if stage == "answer":
        parts["answer"] = cfg.answer
    return config_hash(**parts)


def _with_columns(cfg: CurateConfig) -> CurateConfig:
    """Make the import / caption columns travel with the items, and a row's own training prompt where it has one
    (whatever ``export.prompt_source``: switching it re-exports without listing the input again)."""
    needed = set(cfg.input.carry_columns)
    if cfg.import_mode != "none":
        needed.add(cfg.import_column.split(".")[0])  # a dotted path reads inside a column (reward_model.ground_truth)
    if cfg.answer.evidence == "caption":
        needed.add(cfg.answer.caption_column)
    inp = cfg.input.model_copy(update={"carry_columns": sorted(needed)}).with_carry_if_present([INPUT_PROMPT])
    return cfg.model_copy(update={"input": inp})


def plan(cfg: CurateConfig) -> list[str]:
    try:
        fmt = detect_format(cfg.input)
        n = fingerprint_items(iter_items(cfg.input)).n_items
        listing = f"read {n} item(s) from {input_label(cfg.input)} (format: {fmt})"
    except CaprlError as exc:
        n, listing = 0, f"WARNING: cannot list the input yet: {exc}"
    else:
        if n == 0:  # the run would refuse it: so does the dry run
            raise CaprlError(describe_empty(cfg.input))
    gen = (
        f"generate MCQs with {cfg.generate.backend.name}:{cfg.generate.backend.model}"
        if cfg.import_mode == "none"
        else f"import {cfg.import_mode} from column '{cfg.import_column}'"
    )
    return [
        listing,
        gen,
        "parse them (unparseable blocks kept with reasons)",
        f"answer each question {cfg.answer.rotations}x with the {cfg.answer.evidence} and {cfg.answer.rotations}x "
        f"text-only with {cfg.answer.backend.name}:{cfg.answer.backend.model}",
        f"keep when visual acc > {cfg.filter.min_visual_acc} and text acc < {cfg.filter.max_text_acc}; "
        f"export train/val Parquet + JSONL, audit table and funnel to {cfg.output_dir or '<--output>'}/dataset",
    ]


@command
def run(cfg: CurateConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    carried = list(cfg.input.carry_columns)  # the user's own: copied into the curated rows
    cfg = _with_columns(cfg)
    engines = {"answer.backend": cfg.answer.backend}
    if cfg.import_mode == "none":
        engines["generate.backend"] = cfg.generate.backend
    listing = begin(
        cfg,
        "curate",
        lambda: fingerprint_items(iter_items(cfg.input)),
        engines,
        overwrite=overwrite,
        empty=lambda: describe_empty(cfg.input),
    )
    report = RunReport(command="curate", output_dir=cfg.output_dir, n_items=listing.n_items)
    for name in STAGES:  # generate reads the input; the later stages read what generate recorded of it
        shards = (
            (lambda: iter_shards(iter_items(cfg.input), cfg.sharding.shard_size))
            if name == "generate"
            else (lambda: generated_shards(cfg))
        )
        stage = Stage(
            name,
            f"curate/{name}",
            stage_dir(cfg, name),
            stage_hash(cfg, name),
            functools.partial(make_worker, cfg, name),
            shards,
            engines=engines_of(cfg, name),
        )
        written, skipped = run_stage(cfg, stage, listing, progress=progress)
        report.shards_done, report.shards_skipped = report.shards_done + len(written), report.shards_skipped + skipped
        report.metrics[f"{name}_requests"] = sum(s.metrics.get("requests", 0) for s in stage.run_dir.read_stats())
    from caprl_kit.curate.export import export

    result = export(cfg, {it.key: it for _, items in generated_shards(cfg) for it in items}, carried)
    funnel = result["funnel"]
    report.n_ok = funnel["items_kept"]
    # filtered items are the funnel working, not failures: only unreadable media / failed engine calls count
    report.n_failed = sum(v for k, v in funnel["items_dropped"].items() if k not in FILTERED)
    report.status_counts = {"kept": funnel["items_kept"], **funnel["items_dropped"]}
    report.metrics.update({"questions_parsed": funnel["questions_parsed"], "questions_kept": funnel["questions_kept"]})
    report.outputs.update(result["outputs"])
    report.duration_s = time.perf_counter() - t0
    return report
