"""``caprl eval judge RUN_DIR``: the judge on a finished eval run's saved answers (the open-ended ones a run with
``judge.skip``, or without a judge, left ``awaiting_judge``), then the run's results written again from its saved
answers and the verdicts. No captioner or answerer is loaded: the machine that judges needs only the run folder, the
benchmark files and the judge's endpoint (the official evaluation's ``--skip-judge`` + judge tools, spec §5.2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.evaluate.caption_stage import ShardTally
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.data import load_benchmark
from caprl_kit.evaluate.judge_stage import judged
from caprl_kit.evaluate.layouts import LAYOUTS
from caprl_kit.io.fs import join, url_to_fs
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.rundir import RunDir
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.runners.driver import Listing, begin, command
from caprl_kit.schemas.evaluation import EvalResults, EvalSample
from caprl_kit.schemas.layout import EVAL_ANSWERS_DIR, EVAL_JUDGMENTS_DIR, EVAL_RESULTS_LATEST, RESOLVED_CONFIG


def run_config(run_dir: str, overrides: list[str]) -> EvalConfig:
    """The eval run's recorded config (``RUN_DIR/config.resolved.yaml``) with ``overrides`` (e.g. the judge's
    endpoint) and the judge on (``judge.skip=false``)."""
    from caprl_kit.config import apply_overrides, load_yaml, validate

    path = Path(run_dir) / RESOLVED_CONFIG
    if not path.is_file():
        raise CaprlError(f"{run_dir} is not a caprl eval run ({RESOLVED_CONFIG} is missing); pass an eval's --output")
    data = load_yaml(path)
    if data.get("judge") is None and any(o.startswith("judge.") for o in overrides):
        data["judge"] = {}  # a run made without a judge: the overrides name one
    data = apply_overrides(data, [*overrides])
    cfg = validate(EvalConfig, {**data, "kind": "eval", "output_dir": run_dir}, source=str(path))
    assert isinstance(cfg, EvalConfig)
    if cfg.judge is None:
        raise ConfigError(
            [
                ConfigIssue(
                    "judge",
                    f"{run_dir}'s config sets no judge",
                    "name one: judge.backend.model=gpt-4o judge.backend.openai.base_url=https://api.openai.com/v1",
                )
            ]
        )
    return cfg.model_copy(update={"judge": cfg.judge.model_copy(update={"skip": False})})


@command
def judge_run(cfg: EvalConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    """Judge the open-ended answers saved in ``cfg.output_dir`` (``overwrite``: the verdicts stored there are
    discarded first) and write the run's results again; every task is scored from its saved answers."""
    from caprl_kit.evaluate.pipeline import eval_report, write_results

    progress = progress or NullProgress()
    t0 = time.perf_counter()
    run = str(cfg.output_dir)
    judge_tasks = [b for b in cfg.benchmarks if LAYOUTS.get(b.layout).judge is not None]
    if not judge_tasks:
        raise CaprlError(f"{run} has no benchmark with open-ended answers (layouts mmvu, mmbench_video) to judge")
    benchmarks = {b.name: load_benchmark(b) for b in cfg.benchmarks}
    answers = {b.name: RunDir(join(run, EVAL_ANSWERS_DIR.format(task=b.name)), EvalSample) for b in cfg.benchmarks}
    unfinished = [
        name for name, d in answers.items() if (m := d.manifest()) is None or len(d.done_shards()) < m.n_shards
    ]
    if unfinished:
        raise CaprlError(
            f"{run} holds no finished answers of {', '.join(unfinished)} "
            f"({EVAL_ANSWERS_DIR.format(task=unfinished[0])}/): finish the caprl eval run (it resumes) first"
        )
    assert cfg.judge is not None
    n_items = sum(map(len, benchmarks.values()))
    begin(cfg, "eval", lambda: Listing("", n_items), {"judge.backend": cfg.judge.backend}, overwrite=False)
    if overwrite:
        for bench in judge_tasks:
            fs, path = url_to_fs(join(run, EVAL_JUDGMENTS_DIR.format(task=bench.name)))
            if fs.exists(path):
                fs.rm(path, recursive=True)
    previous = _previous_results(run)
    tasks: dict[str, Any] = {}
    all_samples: dict[str, list[dict[str, Any]]] = {}
    shards = ShardTally()
    for bench in cfg.benchmarks:
        layout, samples = LAYOUTS.get(bench.layout), benchmarks[bench.name]
        rows = [r for url in answers[bench.name].shard_urls() for r in read_shard(url, EvalSample).to_pylist()]
        rows = judged(cfg, bench, layout, samples, rows, progress, shards)
        before = previous.get(bench.name, {})
        tasks[bench.name] = {
            **layout.summarize(rows, samples, layout.scorer(bench, samples, cfg.compat), cfg.compat),
            "caption_monitors": before.get("caption_monitors", {}),
            "faithfulness": before.get("faithfulness"),
        }
        all_samples[bench.name] = rows
    for task, result in previous.items():  # qa_utility: the judge does not change it
        tasks.setdefault(task, result)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    outputs = write_results(cfg, tasks, all_samples, stamp)
    return eval_report(cfg, tasks, outputs, stamp, time.perf_counter() - t0, shards)


def _previous_results(run: str) -> dict[str, dict[str, Any]]:
    """The run's last results by task (what the judge does not change: caption monitors, faithfulness, qa_utility)."""
    fs, path = url_to_fs(join(run, EVAL_RESULTS_LATEST))
    if not fs.exists(path):
        return {}
    results = EvalResults.model_validate_json(fs.cat(path))
    return {task: t.model_dump() for task, t in results.tasks.items()}
