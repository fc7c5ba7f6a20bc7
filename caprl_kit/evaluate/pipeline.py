"""caprl eval (Prism, spec §5), one benchmark after the other (``run_benchmark``): stage 1 captions its images/videos
(``caption_stage``: annotate's caption stage in ``captions/<task>``, cached, resumable), stage 2 a text answerer reads
each caption + the question (``answer_stage``: sharded, resumable), then scoring: BoN and M_Acc per benchmark; plus
the held-out QA utility on a curated set (``qa_utility``).

Outputs in OUTPUT/: ``captions/<task>/`` (annotation shards), ``answers/<task>/`` and ``judgments/<task>/`` (the
judge's verdicts on open-ended video answers; eval_sample shards), ``results_<ts>.json`` (eval_results),
``samples_<task>_<ts>.jsonl``, ``report.html``.
"""

from __future__ import annotations

import functools
import posixpath
import time
from datetime import UTC, datetime
from typing import Any

from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.evaluate.answer_stage import answer_stage
from caprl_kit.evaluate.caption_stage import ShardTally, captions_for, refuse_missing_captions
from caprl_kit.evaluate.config import BenchmarkConfig, EvalConfig
from caprl_kit.evaluate.data import Sample, load_benchmark
from caprl_kit.evaluate.faithfulness import faithfulness_engines, refuse_missing_references, task_faithfulness
from caprl_kit.evaluate.judge_stage import AWAITING, judge_engines, judged
from caprl_kit.evaluate.layouts import LAYOUTS
from caprl_kit.evaluate.qa_utility import refuse_empty_dataset, run_qa_utility
from caprl_kit.evaluate.utility_at_k import check_length_tokenizer
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.readers import paths_label
from caprl_kit.io.stats import utc_now
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.runners.driver import Listing, begin, command
from caprl_kit.schemas.evaluation import EvalResults, EvalSample
from caprl_kit.schemas.layout import EVAL_RESULTS, EVAL_RESULTS_LATEST, EVAL_SAMPLES


def plan(cfg: EvalConfig) -> list[str]:
    source = (
        f"precomputed captions {paths_label(cfg.captions.path)}"
        if cfg.captions
        else f"captioner {cfg.captioner.name}:{cfg.captioner.model} (n={cfg.captioner.sampling.n})"
    )
    source = f"the captions of the eval run {cfg.captions_from}" if cfg.captions_from else source
    lines = [f"{source}, answerer {cfg.answerer.name}:{cfg.answerer.model}, compat={cfg.compat}"]
    for b in cfg.benchmarks:
        lines.append(f"benchmark {b.name}: {b.path} ({b.media_type}, layout {b.layout}, scorer {b.scorer})")
    if cfg.judge is not None:
        judge = "skipped: caprl eval judge RUN_DIR later" if cfg.judge.skip else f"{cfg.judge.backend.model}"
        lines.append(f"judge of the open-ended answers: {cfg.judge.backend.name}:{judge}")
    if cfg.qa_utility:
        cuts = "/".join(map(str, sorted(cfg.qa_utility.length_cuts)))
        lines.append(
            f"held-out QA utility on {paths_label(cfg.qa_utility.dataset)} ({cfg.qa_utility.qa.mode})"
            + (f", utility@{cuts}" if cuts else "")
        )
    return lines


@command
def run(cfg: EvalConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    progress = progress or NullProgress()
    if not cfg.benchmarks and cfg.qa_utility is None:
        raise ConfigError([ConfigIssue("benchmarks", "nothing to evaluate", "add benchmarks or qa_utility")])
    t0 = time.perf_counter()
    benchmarks = {bench.name: load_benchmark(bench) for bench in cfg.benchmarks}  # every file checked first
    if cfg.qa_utility is not None:
        refuse_empty_dataset(cfg.qa_utility.dataset)
        refuse_missing_references(cfg)
        check_length_tokenizer(cfg)
    refuse_missing_captions(cfg)
    begin(
        cfg,
        "eval",
        lambda: Listing("", sum(map(len, benchmarks.values()))),
        {"answerer": cfg.answerer}
        | ({} if cfg.captions or cfg.captions_from else {"captioner": cfg.captioner})
        | faithfulness_engines(cfg)
        | judge_engines(cfg),
        overwrite=overwrite,
    )
    tasks: dict[str, Any] = {}
    all_samples: dict[str, list[dict]] = {}
    shards = ShardTally()
    for bench in cfg.benchmarks:
        tasks[bench.name], all_samples[bench.name] = run_benchmark(cfg, bench, benchmarks[bench.name], progress, shards)
    if cfg.qa_utility is not None:
        tasks["qa_utility"], all_samples["qa_utility"] = run_qa_utility(cfg, progress, shards)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    outputs = write_results(cfg, tasks, all_samples, stamp)
    return eval_report(cfg, tasks, outputs, stamp, time.perf_counter() - t0, shards)


def run_benchmark(
    cfg: EvalConfig, bench: BenchmarkConfig, samples: list[Sample], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """One benchmark from its samples to its result: the captions of its media (stage 1), the answers to its
    questions read from them (stage 2), the judge's verdicts on its open-ended answers, then its layout's result
    (BoN and M_Acc over the scored rows, and a video benchmark's own breakdown)."""
    layout = LAYOUTS.get(bench.layout)
    scorer = layout.scorer(bench, samples, cfg.compat)
    media = list(dict.fromkeys((s.media, s.media_type) for s in samples))
    captions, no_caption, monitors, digest = captions_for(cfg, bench.name, media, progress, shards)
    scoring = functools.partial(layout.score, scorer=scorer, compat=cfg.compat)
    rows = answer_stage(cfg, bench.name, scorer, samples, captions, no_caption, digest, progress, shards, scoring)
    rows = judged(cfg, bench, layout, samples, rows, progress, shards)
    faithfulness = task_faithfulness(cfg, bench.name, media, captions, progress)
    return {
        **layout.summarize(rows, samples, scorer, cfg.compat),
        "caption_monitors": monitors,
        "faithfulness": faithfulness,
    }, rows


def write_results(
    cfg: EvalConfig, tasks: dict[str, Any], all_samples: dict[str, list[dict]], stamp: str
) -> dict[str, str]:
    """results_<ts>.json (+ results_latest.json), samples_<task>_<ts>.jsonl and report.html, each atomically."""
    from caprl_kit.evaluate.report import render_report

    fs, base = url_to_fs(str(cfg.output_dir))
    results = EvalResults(
        captioner=label_of(cfg),
        answerer=cfg.answerer.model or cfg.answerer.name,
        compat=cfg.compat,
        tasks=tasks,
        average=_average(tasks),
        created_at=utc_now(),
    )
    atomic_write_text(fs, join(base, EVAL_RESULTS.format(ts=stamp)), results.model_dump_json(indent=2))
    atomic_write_text(fs, join(base, EVAL_RESULTS_LATEST), results.model_dump_json(indent=2))
    for task, rows in all_samples.items():
        text = "".join(EvalSample.model_validate(r).model_dump_json() + "\n" for r in rows)
        atomic_write_text(fs, join(base, EVAL_SAMPLES.format(task=task, ts=stamp)), text)
    atomic_write_text(fs, join(base, "report.html"), render_report([(results, all_samples)]))
    return {
        "results": join(str(cfg.output_dir), EVAL_RESULTS.format(ts=stamp)),
        "report": join(str(cfg.output_dir), "report.html"),
    }


def eval_report(
    cfg: EvalConfig,
    tasks: dict[str, Any],
    outputs: dict[str, str],
    stamp: str,
    secs: float,
    shards: ShardTally | None = None,
) -> RunReport:
    """The summary: scored and unscored samples per task, M_Acc/BoN, a note for every task with gaps, and the
    shards its stages wrote now and skipped (captions and answers, every task)."""
    n_ok, n_failed = sum(t["n_samples"] for t in tasks.values()), sum(t["n_failed"] for t in tasks.values())
    shards = shards or ShardTally()
    report = RunReport(
        command="eval",
        output_dir=cfg.output_dir,
        n_items=n_ok + n_failed,
        n_ok=n_ok,
        n_failed=n_failed,
        shards_done=shards.written,
        shards_skipped=shards.skipped,
        duration_s=secs,
        outputs=outputs,
    )
    for task, t in tasks.items():
        for status, count in t["failed"].items():
            report.status_counts[status] = report.status_counts.get(status, 0) + count
        if t["n_failed"]:
            report.notes.append(
                f"{task}: {t['n_failed']} sample(s) not scored ({', '.join(t['failed'])}) and left "
                f"out of its M_Acc/BoN; see {EVAL_SAMPLES.format(task=task, ts=stamp)}"
            )
        if t["failed"].get(AWAITING):
            report.notes.append(f"{task}: judge its open-ended answers with caprl eval judge {cfg.output_dir}")
        if t["m_acc"] is None:
            report.notes.append(f"{task}: no sample could be scored; it is left out of the average")
            continue
        report.metrics[f"{task} M_Acc"] = t["m_acc"]
        report.metrics[f"{task} BoN"] = t["bon"]
        for name, value in t.get("metrics", {}).items():
            report.metrics[f"{task} {name}"] = value
        if t.get("cannot_answer_rate") is not None:
            report.metrics[f"{task} cannot-answer rate"] = t["cannot_answer_rate"]
        for flag, rate in t.get("caption_monitors", {}).items():
            if rate:
                report.metrics[f"{task} captions {flag.replace('_', ' ')}"] = rate
        if t.get("blind_ceiling") is not None:
            report.metrics[f"{task} blind_ceiling"] = t["blind_ceiling"]
        for cut in (t.get("utility_at_k") or {}).get("cuts", []):
            if cut["utility"] is not None:
                report.metrics[f"{task} utility@{cut['k']}"] = cut["utility"]
        if (t.get("utility_at_k") or {}).get("area") is not None:
            report.metrics[f"{task} utility@k area"] = t["utility_at_k"]["area"]
        for key, label in (
            ("claim_precision", "claim precision"),
            ("hallucinated_claim_rate", "hallucinated-claim rate"),
        ):
            if (t.get("faithfulness") or {}).get(key) is not None:
                report.metrics[f"{task} {label}"] = t["faithfulness"][key]
    return report


def label_of(cfg: EvalConfig) -> str:
    if cfg.label:
        return cfg.label
    if cfg.captions:  # the file's name (several: the first's)
        path = cfg.captions.path
        return posixpath.basename(path if isinstance(path, str) else path[0])
    return cfg.captioner.model or cfg.captioner.name


def _average(tasks: dict[str, dict[str, Any]]) -> float | None:
    scored = [t["m_acc"] for t in tasks.values() if t["m_acc"] is not None]
    return sum(scored) / len(scored) if scored else None
