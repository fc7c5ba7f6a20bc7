"""caprl eval (Prism, spec §5): stage 1 captions every benchmark image/video (annotate's caption stage in
``captions/<task>``: cached, resumable), stage 2 a text answerer reads each caption + the question (sharded, resumable), then
scoring: BoN and M_Acc per benchmark; plus the held-out QA utility on a curated set.

Outputs in OUTPUT/: ``captions/<task>/`` (annotation shards), ``answers/<task>/`` (eval_sample shards),
``results_<ts>.json`` (eval_results), ``samples_<task>_<ts>.jsonl``, ``report.html``.
"""

from __future__ import annotations

import functools
import json
import posixpath
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import caption
from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, Response, SamplingParams
from caprl_kit.config import config_hash
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.evaluate.captions_file import CaptionsFileConfig, precomputed, read_captions
from caprl_kit.evaluate.config import BenchmarkConfig, EvalConfig
from caprl_kit.evaluate.data import Sample, load_benchmark
from caprl_kit.evaluate.metrics import score, scorer_for
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.rows import read_rows
from caprl_kit.io.rundir import RunDir, prepare_output
from caprl_kit.io.shards import Fingerprint, ShardSpec, iter_shards
from caprl_kit.io.stats import StatsBuilder, utc_now
from caprl_kit.log import get_logger
from caprl_kit.monitors import flag_counts, flag_rates
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.prompts import PROMPTS
from caprl_kit.runners.driver import Listing, Stage, begin, command, run_stage
from caprl_kit.runners.stream import ShardStream, Work
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.evaluation import EvalResults, EvalSample
from caprl_kit.schemas.layout import (
    EVAL_ANSWERS_DIR,
    EVAL_CAPTIONS_DIR,
    EVAL_RESULTS,
    EVAL_RESULTS_LATEST,
    EVAL_SAMPLES,
)
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)
CAPTION_SENTENCE = "Here is a detailed caption of {what}: {caption}. Please answer the question based on the caption."


def label_of(cfg: EvalConfig) -> str:
    if cfg.label:
        return cfg.label
    return posixpath.basename(cfg.captions.path) if cfg.captions else cfg.captioner.model or cfg.captioner.name


@dataclass
class ShardTally:
    """The shards a run's stages wrote now and skipped (done by an earlier run): the summary's "shards written /
    skipped" (captions and answers, every task)."""

    written: int = 0
    skipped: int = 0

    def add(self, written: int, skipped: int) -> None:
        self.written += written
        self.skipped += skipped


def captions_for(
    cfg: EvalConfig, task: str, media: list[tuple[str, str]], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float], str | None]:
    """Stage 1: the captioner's captions, or the precomputed ones (``captions:``) with their digest."""
    if cfg.captions is None:
        return (*caption_stage(cfg, task, media, progress, shards), None)
    c = cfg.captions
    fs, path = url_to_fs(c.path)
    info = fs.info(path) if fs.exists(path) else {}
    stamp = f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag')}"
    return precomputed(c, media, _captions_table(c.path, c.media_root, c.caption_column, stamp))


@functools.lru_cache(maxsize=2)  # read once per run however many tasks use it; a changed file is read again
def _captions_table(path: str, media_root: str | None, column: str, stamp: str) -> dict[str, list[str]]:
    return read_captions(CaptionsFileConfig(path=path, media_root=media_root, caption_column=column))


def caption_stage(
    cfg: EvalConfig, task: str, media: list[tuple[str, str]], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float]]:
    """Captions (n per item) for ``media`` [(path, media_type)], via annotate's caption stage (cached by shard), why
    the items without a caption have none (``status: error_message``), and the captions' hygiene flag rates."""
    out = join(str(cfg.output_dir), EVAL_CAPTIONS_DIR.format(task=task))
    prepare_output(out, "annotate")  # claimed before the caption manifest lands in it (caption() keeps the claim)
    fs, base = url_to_fs(out)
    manifest = join(base, "manifest.jsonl")
    lines = "".join(json.dumps({"path": p, "key": p, "media_type": t}) + "\n" for p, t in media)
    if not fs.exists(manifest) or fs.cat(manifest).decode() != lines:
        atomic_write_text(fs, manifest, lines)
    media_type = media[0][1] if media else "image"
    acfg = AnnotateConfig.model_validate(
        {
            "input": {
                "path": join(out, "manifest.jsonl"),
                "format": "jsonl",
                "key_column": "key",
                "media_type": media_type,
            },
            "backend": cfg.captioner.model_dump(),
            "prompt": {"image": cfg.caption_prompt, "video": cfg.video_caption_prompt},
            "media": cfg.media.model_dump(),
            "sharding": cfg.sharding.model_dump(),
            "decode": cfg.decode.model_dump(),
            "runner": cfg.runner.model_dump(),
            "output_dir": out,
        }
    )
    done = caption(acfg, progress)
    if shards is not None:
        shards.add(done.shards_done, done.shards_skipped)
    captions: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    flags: Counter[str] = Counter()
    columns = ["key", "captions", "caption_flags", "status", "error_message"]
    for url in RunDir(out, AnnotationRow).shard_urls():
        for row in read_shard(url, AnnotationRow, columns=columns).to_pylist():
            if row["status"] == "ok" and row["captions"]:
                captions[row["key"]] = row["captions"]
                flags.update(flag_counts(row["caption_flags"] or []))
            else:
                failed[row["key"]] = f"{row['status']}: {row['error_message'] or 'no caption'}"
    if failed:
        log.warning(
            "%s: %d of %d item(s) have no caption and will not be scored (e.g. %s)",
            task,
            len(failed),
            len(media),
            next(iter(failed.values())),
        )
    return captions, failed, flag_rates(dict(flags)) if flags else {}


class AnswerWorker:
    """Stage 2 for one task on the streaming engine: each (sample, caption) -> the answerer -> an eval_sample row;
    an item without a caption or a failed answer is a row with its status, never a dead shard."""

    def __init__(
        self,
        cfg: EvalConfig,
        task: str,
        scorer: str,
        captions: dict[str, list[str]],
        no_caption: dict[str, str],
        progress: Progress,
    ):
        self.cfg, self.task, self.scorer, self.captions, self.progress = cfg, task, scorer, captions, progress
        self.no_caption = no_caption
        self.backend = build_backend(cfg.answerer)
        self.sampling = SamplingParams.from_config(cfg.answerer.sampling).with_(n=1)
        self.run = RunDir(join(str(cfg.output_dir), EVAL_ANSWERS_DIR.format(task=task)), EvalSample)
        self.engine_label = f"eval answers with {cfg.answerer.name}:{cfg.answerer.model}"

    def _row(self, s: Sample, ci: int, cap: str, resp: Response | None, reason: str | None = None) -> dict[str, Any]:
        base = dict(
            task=self.task,
            sample_id=s.id,
            question=s.question,
            gold=s.gold,
            caption_index=ci,
            caption=cap,
            metric=self.scorer,
        )
        if resp is None:  # the captioner failed on this item: not scored, counted as failed
            return {
                **base,
                "response": "",
                "prediction": None,
                "score": None,
                "status": "no_caption",
                "error_message": reason,
            }
        self.progress.advance(f"answer {self.task}", items=1, failed=int(not resp.ok))
        if not resp.ok:
            return {
                **base,
                "response": "",
                "prediction": None,
                "score": None,
                "status": "answer_failed",
                "error_message": str(resp.error),
            }
        pred, value = score(resp.texts[0], s.gold, self.scorer, self.cfg.compat)
        return {
            **base,
            "response": resp.texts[0],
            "prediction": pred,
            "score": value,
            "status": "ok",
            "error_message": None,
        }

    def plan(self, spec: ShardSpec, samples: list[Sample]) -> Iterator[Work]:
        for s in samples:
            caps = self.captions.get(s.media) or []
            if not caps:
                self.progress.advance(f"answer {self.task}", items=1, failed=1)
                yield Work([], functools.partial(self._uncaptioned, s))
                continue
            what = "a video" if s.media_type == "video" else "an image"
            for ci, cap in enumerate(caps):
                text = CAPTION_SENTENCE.format(what=what, caption=cap) + s.question
                yield Work([Request.user(text, sampling=self.sampling)], functools.partial(self._answered, s, ci, cap))

    def _uncaptioned(self, s: Sample, _: list[Response]) -> list[dict[str, Any]]:
        return [self._row(s, 0, "", None, self.no_caption.get(s.media, "no caption"))]

    def _answered(self, s: Sample, ci: int, cap: str, got: list[Response]) -> list[dict[str, Any]]:
        return [self._row(s, ci, cap, got[0])]

    def commit(
        self,
        spec: ShardSpec,
        samples: list[Sample],
        rows: list[dict[str, Any]],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> ShardStats:
        stats = StatsBuilder(spec.shard_id, EvalSample.schema_id(), opened=opened)
        for r in rows:
            stats.add(r["status"], r["error_message"])
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        return built

    def open_stream(self) -> ShardStream:
        return ShardStream(self, self.backend)

    def __call__(self, spec: ShardSpec, samples: list[Sample]) -> ShardStats:
        return next(iter(self.open_stream().run([(spec, samples)])))


def _fingerprint(samples: list[Sample]) -> str:
    fp = Fingerprint()
    for s in samples:
        fp.add(s.id, s.media, s.question, s.gold)
    return fp.hexdigest()


def _stage2_hash(cfg: EvalConfig, scorer: str, captions_digest: str | None = None) -> str:
    parts: dict[str, Any] = {"answerer": cfg.answerer, "scorer": scorer}
    if captions_digest is None:
        parts.update(
            captioner=cfg.captioner,
            media=cfg.media,
            caption_prompt=[PROMPTS.get(cfg.caption_prompt), PROMPTS.get(cfg.video_caption_prompt)],
        )
    else:  # precomputed captions: the answers depend on those captions, not on a captioner
        parts["captions"] = captions_digest
    return config_hash(**parts)


def summarize(rows: list[dict[str, Any]], compat: Literal["fixed", "official"], rescore: bool = True) -> dict[str, Any]:
    """BoN (mean of per-sample max) and M_Acc (mean of per-sample mean) over the scored caption slots. Slots that
    were not scored (no caption, answerer failed) are left out and counted; a sample with no scored slot is failed."""
    per: dict[str, list[float]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for r in rows:
        if r.get("status") not in (None, "ok"):
            reasons.setdefault(r["sample_id"], {})[r["status"]] = r.get("error_message") or ""
            continue
        value = r["score"]
        if rescore and r["response"]:
            value = score(r["response"], r["gold"], r["metric"], compat)[1]  # compat can change without re-answering
            r["score"] = value
        per.setdefault(r["sample_id"], []).append(value)
    failed: dict[str, int] = {}
    for sid, why in reasons.items():
        if sid not in per:
            for status in why:
                failed[status] = failed.get(status, 0) + 1
    n = len(per)
    return {
        "metric": rows[0]["metric"] if rows else "none",
        "m_acc": sum(sum(v) / len(v) for v in per.values()) / n if n else None,
        "bon": sum(max(v) for v in per.values()) / n if n else None,
        "n_samples": n,
        "n_failed": len([sid for sid in reasons if sid not in per]),
        "failed": failed,
    }


def run_benchmark(
    cfg: EvalConfig, bench: BenchmarkConfig, samples: list[Sample], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, Any], list[dict]]:
    scorer = bench.scorer if bench.scorer != "auto" else scorer_for(bench.name, samples[0].gold if samples else "")
    media = list(dict.fromkeys((s.media, s.media_type) for s in samples))
    captions, no_caption, monitors, digest = captions_for(cfg, bench.name, media, progress, shards)
    stage = Stage(
        f"answer {bench.name}",
        f"eval/{bench.name}",
        RunDir(join(str(cfg.output_dir), EVAL_ANSWERS_DIR.format(task=bench.name)), EvalSample),
        _stage2_hash(cfg, scorer, digest),
        functools.partial(AnswerWorker, cfg, bench.name, scorer, captions, no_caption),
        lambda: iter_shards(samples, cfg.sharding.shard_size),
        total=sum(max(1, len(captions.get(s.media) or [])) for s in samples),
        engines=(cfg.answerer,),
    )
    written, skipped = run_stage(cfg, stage, Listing(_fingerprint(samples), len(samples)), progress=progress)
    if shards is not None:
        shards.add(len(written), skipped)
    rows = [r for url in stage.run_dir.shard_urls() for r in read_shard(url, EvalSample).to_pylist()]
    return {**summarize(rows, cfg.compat), "caption_monitors": monitors}, rows


def run_qa_utility(
    cfg: EvalConfig, progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """Caption the curated set's images, score the captions with the QA reward machinery (held-out QA accuracy)."""
    import pyarrow.parquet as pq

    from caprl_kit.rewards.base import decode_ground_truth
    from caprl_kit.rewards.qa import qa_scorer

    qu = cfg.qa_utility
    assert qu is not None, "run_qa_utility runs only when qa_utility is set"
    fs, path = url_to_fs(qu.dataset)
    with fs.open(path, "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    rows = rows[: qu.limit] if qu.limit else rows
    media = []
    for r in rows:
        video = bool(r.get("videos"))
        media.append(((r["videos"] if video else r["images"])[0], "video" if video else "image"))
    captions, no_caption, monitors, _ = captions_for(cfg, "qa_utility", list(dict.fromkeys(media)), progress, shards)
    scorer = qa_scorer(qu.qa)  # in-process, or the reward service
    qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in rows]
    caps, gts, index, unscored = [], [], [], []
    for r, qa, (m, _) in zip(rows, qas, media):
        if not captions.get(m):  # no caption (unreadable media, engine failure): not scored, counted
            unscored.append(
                dict(
                    task="qa_utility",
                    sample_id=r["id"],
                    question=f"{len(qa)} held-out questions",
                    gold="",
                    caption_index=0,
                    caption="",
                    response="",
                    prediction=None,
                    score=None,
                    metric="qa_accuracy",
                    status="no_caption",
                    error_message=no_caption.get(m, "no caption"),
                )
            )
            continue
        for ci, cap in enumerate(captions[m]):
            caps.append(cap)
            gts.append(qa)
            index.append((r["id"], ci))
    progress.start("qa utility", total=len(caps))
    out = scorer.score(caps, gts)
    progress.advance("qa utility", items=len(caps))
    # the reward service's details (qa.service) hold the same keys; a server from before it sent them, only scores
    samples = [
        dict(
            task="qa_utility",
            sample_id=sid,
            question=f"{d.get('n_questions', len(qa))} held-out questions",
            gold="",
            caption_index=ci,
            caption=c,
            response=json.dumps(d.get("predicted", [])),
            prediction=None,
            score=s,
            metric="qa_accuracy",
            status="ok",
        )
        for (sid, ci), c, qa, s, d in zip(index, caps, gts, out.scores, out.details)
    ] + unscored
    offered = [c for d in out.details for c in d.get("cannot_answer", [])]
    summary = {
        **summarize(samples, cfg.compat, rescore=False),
        "caption_monitors": monitors,
        "cannot_answer_rate": sum(offered) / len(offered) if offered else None,
    }
    if qu.blind_captions:
        summary["blind_ceiling"], summary["blind_caption"] = blind_ceiling(
            scorer,
            read_candidates(qu.blind_captions, qu.blind_caption_column),
            qas,
            progress,
        )
    return summary, samples


def read_candidates(path: str, column: str) -> list[str]:
    """Distinct candidate captions from a JSONL/Parquet column or a text file (one per line)."""
    if path.endswith((".parquet", ".jsonl", ".json")):
        values = [
            r.get(column)
            for r in read_rows(
                path, columns=[column] if path.endswith(".parquet") else None, key="qa_utility.blind_captions"
            )
        ]
    else:
        fs, p = url_to_fs(path)
        values = [x for x in fs.cat(p).decode().splitlines() if x.strip()]
    out = list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))
    if not out:
        raise ConfigError(
            [
                ConfigIssue(
                    "qa_utility.blind_captions",
                    f"no captions in {path} ({column})",
                    "point it at a file with a caption column",
                )
            ]
        )
    return out


def blind_ceiling(scorer: Any, candidates: list[str], qas: list[list[Any]], progress: Progress) -> tuple[float, str]:
    """The image-blind ceiling: the best mean score any single fixed caption reaches when used for every item."""
    progress.start("blind ceiling", total=len(candidates))
    best, best_caption = -1.0, ""
    for cap in candidates:
        scores = scorer.score([cap] * len(qas), qas).scores
        value = sum(scores) / max(1, len(scores))
        if value > best:
            best, best_caption = value, cap
        progress.advance("blind ceiling")
    progress.finish("blind ceiling")
    return best, best_caption


def _average(tasks: dict[str, dict[str, Any]]) -> float | None:
    scored = [t["m_acc"] for t in tasks.values() if t["m_acc"] is not None]
    return sum(scored) / len(scored) if scored else None


def plan(cfg: EvalConfig) -> list[str]:
    source = (
        f"precomputed captions {cfg.captions.path}"
        if cfg.captions
        else f"captioner {cfg.captioner.name}:{cfg.captioner.model} (n={cfg.captioner.sampling.n})"
    )
    lines = [f"{source}, answerer {cfg.answerer.name}:{cfg.answerer.model}, compat={cfg.compat}"]
    for b in cfg.benchmarks:
        lines.append(f"benchmark {b.name}: {b.path} ({b.media_type}, scorer {b.scorer})")
    if cfg.qa_utility:
        lines.append(f"held-out QA utility on {cfg.qa_utility.dataset} ({cfg.qa_utility.qa.mode})")
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
    begin(
        cfg,
        "eval",
        lambda: Listing("", sum(map(len, benchmarks.values()))),
        {"answerer": cfg.answerer} | ({} if cfg.captions else {"captioner": cfg.captioner}),
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


def refuse_empty_dataset(dataset: str) -> None:
    """A held-out QA set (``qa_utility.dataset``) with no rows is refused before anything is written: its score
    over nothing would be no number at all. A missing or unreadable file is left to the read that reports it."""
    import pyarrow.parquet as pq

    fs, path = url_to_fs(dataset)
    try:
        with fs.open(path, "rb") as fh:
            n_rows = pq.ParquetFile(fh).metadata.num_rows
    except Exception:  # noqa: BLE001 - reported where the dataset is read
        return
    if n_rows == 0:
        raise CaprlError(
            f"qa_utility.dataset {dataset} has no rows, so nothing was written: looked for curated QA "
            "rows (images or videos, reward_model.ground_truth) as caprl curate writes them to "
            "dataset/val.parquet. Point qa_utility.dataset at a non-empty one"
        )


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
        if t["m_acc"] is None:
            report.notes.append(f"{task}: no sample could be scored; it is left out of the average")
            continue
        report.metrics[f"{task} M_Acc"] = t["m_acc"]
        report.metrics[f"{task} BoN"] = t["bon"]
        if t.get("cannot_answer_rate") is not None:
            report.metrics[f"{task} cannot-answer rate"] = t["cannot_answer_rate"]
        for flag, rate in t.get("caption_monitors", {}).items():
            if rate:
                report.metrics[f"{task} captions {flag.replace('_', ' ')}"] = rate
        if t.get("blind_ceiling") is not None:
            report.metrics[f"{task} blind_ceiling"] = t["blind_ceiling"]
    return report
