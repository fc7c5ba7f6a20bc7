"""caprl eval (Prism, spec §5): stage 1 captions every benchmark image/video (``caprl annotate`` underneath:
cached, resumable), stage 2 a text answerer reads each caption + the question (sharded, resumable), then
scoring: BoN and M_Acc per benchmark; plus the held-out QA utility on a curated set.

Outputs in OUTPUT/: ``captions/<task>/`` (annotation shards), ``answers/<task>/`` (eval_sample shards),
``results_<ts>.json`` (eval_results), ``samples_<task>_<ts>.jsonl``, ``report.html``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run as annotate
from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams
from caprl_kit.commands import NullProgress, Progress, RunReport
from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.evaluate.config import BenchmarkConfig, EvalConfig
from caprl_kit.evaluate.data import Sample, load_benchmark
from caprl_kit.evaluate.metrics import score, scorer_for
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import Fingerprint, iter_shards
from caprl_kit.io.stats import StatsBuilder, utc_now
from caprl_kit.log import get_logger
from caprl_kit.runners import RUNNERS
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.evaluation import EvalResults, EvalSample

log = get_logger(__name__)
CAPTION_SENTENCE = "Here is a detailed caption of {what}: {caption}. Please answer the question based on the caption."


def label_of(cfg: EvalConfig) -> str:
    return cfg.label or cfg.captioner.model or cfg.captioner.name


def caption_stage(cfg: EvalConfig, task: str, media: list[tuple[str, str]], progress: Progress) -> dict[str, list[str]]:
    """Captions (n per item) for ``media`` [(path, media_type)], via the annotate pipeline (cached by shard)."""
    out = join(str(cfg.output_dir), "captions", task)
    fs, base = url_to_fs(out)
    fs.makedirs(base, exist_ok=True)
    manifest = join(base, "manifest.jsonl")
    lines = "".join(json.dumps({"path": p, "key": p, "media_type": t}) + "\n" for p, t in media)
    if not fs.exists(manifest) or fs.cat(manifest).decode() != lines:
        atomic_write_text(fs, manifest, lines)
    media_type = media[0][1] if media else "image"
    acfg = AnnotateConfig.model_validate({
        "input": {"path": join(out, "manifest.jsonl"), "format": "jsonl",
                  "key_column": "key", "media_type": media_type},
        "backend": cfg.captioner.model_dump(), "prompt": {"image": cfg.caption_prompt, "video": cfg.video_caption_prompt},
        "media": cfg.media.model_dump(), "sharding": cfg.sharding.model_dump(), "runner": cfg.runner.model_dump(),
        "output_dir": out,
    })
    annotate(acfg, progress=progress)
    captions: dict[str, list[str]] = {}
    for url in RunDir(out, AnnotationRow).shard_urls():
        for row in read_shard(url, AnnotationRow, columns=["key", "captions", "status"]).to_pylist():
            captions[row["key"]] = row["captions"] if row["status"] == "ok" else []
    return captions


class AnswerWorker:
    """Stage 2 for one task: each (sample, caption) -> the answerer -> an eval_sample row."""

    def __init__(self, cfg: EvalConfig, task: str, scorer: str, captions: dict[str, list[str]], progress: Progress):
        self.cfg, self.task, self.scorer, self.captions, self.progress = cfg, task, scorer, captions, progress
        self.backend = build_backend(cfg.answerer)
        self.sampling = SamplingParams.from_config(cfg.answerer.sampling).with_(n=1)
        self.run = RunDir(join(str(cfg.output_dir), "answers", task), EvalSample)

    def __call__(self, spec, samples: list[Sample]):
        stats = StatsBuilder(spec.shard_id, EvalSample.schema_id())
        todo, rows = [], []
        for s in samples:
            what = "a video" if s.media_type == "video" else "an image"
            caps = self.captions.get(s.media) or []
            if not caps:  # the captioner failed on this item: every caption slot scores 0
                rows.append(dict(task=self.task, sample_id=s.id, question=s.question, gold=s.gold, caption_index=0,
                                 caption="", response="", prediction=None, score=0.0, metric=self.scorer))
                stats.add("no_caption")
                continue
            for ci, cap in enumerate(caps):
                text = CAPTION_SENTENCE.format(what=what, caption=cap) + s.question
                todo.append((s, ci, cap, Request.user(text, sampling=self.sampling)))
        size = self.cfg.answerer.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            for (s, ci, cap, _), resp in zip(chunk, self.backend.generate([t[3] for t in chunk])):
                if not resp.ok:
                    raise RuntimeError(f"answerer failed: {resp.error}")  # a whole-shard failure: retried
                pred, value = score(resp.texts[0], s.gold, self.scorer, self.cfg.compat)
                rows.append(dict(task=self.task, sample_id=s.id, question=s.question, gold=s.gold, caption_index=ci,
                                 caption=cap, response=resp.texts[0], prediction=pred, score=value, metric=self.scorer))
                stats.add("ok")
            self.progress.advance(f"answer {self.task}", items=len(chunk))
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        return built


def _fingerprint(samples: list[Sample]) -> str:
    fp = Fingerprint()
    for s in samples:
        fp.add(s.id, s.media, s.question, s.gold)
    return fp.hexdigest()


def _stage2_hash(cfg: EvalConfig, scorer: str) -> str:
    data = {"captioner": cfg.captioner.model_dump(mode="json"), "answerer": cfg.answerer.model_dump(mode="json"),
            "caption_prompt": [cfg.caption_prompt, cfg.video_caption_prompt], "media": cfg.media.model_dump(mode="json"),
            "scorer": scorer}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def summarize(rows: list[dict[str, Any]], compat: str, rescore: bool = True) -> dict[str, Any]:
    """BoN (mean of per-sample max) and M_Acc (mean of per-sample mean) over the caption slots."""
    per: dict[str, list[float]] = {}
    for r in rows:
        value = r["score"]
        if rescore and r["response"]:
            value = score(r["response"], r["gold"], r["metric"], compat)[1]  # compat can change without re-answering
            r["score"] = value
        per.setdefault(r["sample_id"], []).append(value)
    n = len(per)
    return {"metric": rows[0]["metric"] if rows else "none",
            "m_acc": sum(sum(v) / len(v) for v in per.values()) / n if n else 0.0,
            "bon": sum(max(v) for v in per.values()) / n if n else 0.0, "n_samples": n}


def run_benchmark(cfg: EvalConfig, bench: BenchmarkConfig, progress: Progress) -> tuple[dict[str, Any], list[dict]]:
    samples = load_benchmark(bench)
    scorer = bench.scorer if bench.scorer != "auto" else scorer_for(bench.name, samples[0].gold if samples else "")
    media = list(dict.fromkeys((s.media, s.media_type) for s in samples))
    captions = caption_stage(cfg, bench.name, media, progress)
    run_dir = RunDir(join(str(cfg.output_dir), "answers", bench.name), EvalSample)
    done = run_dir.open(command=f"eval/{bench.name}", config=cfg, config_hash=_stage2_hash(cfg, scorer),
                        input_fingerprint=_fingerprint(samples), n_items=len(samples),
                        shard_size=cfg.sharding.shard_size)
    progress.start(f"answer {bench.name}", total=sum(max(1, len(captions.get(s.media) or [])) for s in samples))
    RUNNERS.get(cfg.runner.name)(
        iter_shards(samples, cfg.sharding.shard_size),
        functools.partial(AnswerWorker, cfg, bench.name, scorer, captions),
        done=done, max_retries=cfg.runner.max_shard_retries, num_workers=cfg.runner.num_workers,
        address=cfg.runner.address, progress=progress, stage=f"answer {bench.name}")
    rows = [r for url in run_dir.shard_urls() for r in read_shard(url, EvalSample).to_pylist()]
    return summarize(rows, cfg.compat), rows


def run_qa_utility(cfg: EvalConfig, progress: Progress) -> tuple[dict[str, Any], list[dict]]:
    """Caption the curated set's images, score the captions with the QA reward machinery (held-out QA accuracy)."""
    import pyarrow.parquet as pq

    from caprl_kit.rewards.base import decode_ground_truth
    from caprl_kit.rewards.qa import QAScorer

    qu = cfg.qa_utility
    fs, path = url_to_fs(qu.dataset)  # type: ignore[union-attr]
    with fs.open(path, "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    rows = rows[: qu.limit] if qu.limit else rows  # type: ignore[union-attr]
    media = []
    for r in rows:
        video = bool(r.get("videos"))
        media.append(((r["videos"] if video else r["images"])[0], "video" if video else "image"))
    captions = caption_stage(cfg, "qa_utility", list(dict.fromkeys(media)), progress)
    scorer = QAScorer(qu.qa)  # type: ignore[union-attr]
    qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in rows]
    caps, gts, index = [], [], []
    for r, qa, (m, _) in zip(rows, qas, media):
        for ci, cap in enumerate(captions.get(m) or [""]):
            caps.append(cap)
            gts.append(qa)
            index.append((r["id"], ci))
    progress.start("qa utility", total=len(caps))
    out = scorer.score(caps, gts)
    progress.advance("qa utility", items=len(caps))
    samples = [dict(task="qa_utility", sample_id=sid, question=f"{d['n_questions']} held-out questions", gold="",
                    caption_index=ci, caption=c, response=json.dumps(d["predicted"]), prediction=None, score=s,
                    metric="qa_accuracy") for (sid, ci), c, s, d in zip(index, caps, out.scores, out.details)]
    summary = summarize(samples, cfg.compat, rescore=False)
    if qu.blind_captions:  # type: ignore[union-attr]
        summary["blind_ceiling"], summary["blind_caption"] = blind_ceiling(
            scorer, read_candidates(qu.blind_captions, qu.blind_caption_column), qas, progress)  # type: ignore[union-attr]
    return summary, samples


def read_candidates(path: str, column: str) -> list[str]:
    """Distinct candidate captions from a JSONL/Parquet column or a text file (one per line)."""
    import pyarrow.parquet as pq

    fs, p = url_to_fs(path)
    if p.endswith(".parquet"):
        with fs.open(p, "rb") as fh:
            values = pq.read_table(fh, columns=[column]).column(column).to_pylist()
    else:
        lines = [x for x in fs.cat(p).decode().splitlines() if x.strip()]
        values = [json.loads(x)[column] for x in lines] if p.endswith((".jsonl", ".json")) else lines
    out = list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))
    if not out:
        raise ConfigError([ConfigIssue("qa_utility.blind_captions", f"no captions in {path} ({column})",
                                       "point it at a file with a caption column")])
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


def plan(cfg: EvalConfig) -> list[str]:
    lines = [f"captioner {cfg.captioner.name}:{cfg.captioner.model} (n={cfg.captioner.sampling.n}), "
             f"answerer {cfg.answerer.name}:{cfg.answerer.model}, compat={cfg.compat}"]
    for b in cfg.benchmarks:
        lines.append(f"benchmark {b.name}: {b.path} ({b.media_type}, scorer {b.scorer})")
    if cfg.qa_utility:
        lines.append(f"held-out QA utility on {cfg.qa_utility.dataset} ({cfg.qa_utility.qa.mode})")
    return lines


def run(cfg: EvalConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    progress = progress or NullProgress()
    if not cfg.output_dir:
        raise ConfigError([ConfigIssue("output_dir", "no output directory", "pass --output DIR or set output_dir")])
    if not cfg.benchmarks and cfg.qa_utility is None:
        raise ConfigError([ConfigIssue("benchmarks", "nothing to evaluate", "add benchmarks or qa_utility")])
    t0 = time.perf_counter()
    fs, base = url_to_fs(str(cfg.output_dir))
    if overwrite and fs.exists(base):
        fs.rm(base, recursive=True)
    tasks: dict[str, Any] = {}
    all_samples: dict[str, list[dict]] = {}
    for bench in cfg.benchmarks:
        tasks[bench.name], all_samples[bench.name] = run_benchmark(cfg, bench, progress)
    if cfg.qa_utility is not None:
        tasks["qa_utility"], all_samples["qa_utility"] = run_qa_utility(cfg, progress)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    results = EvalResults(captioner=label_of(cfg), answerer=cfg.answerer.model or cfg.answerer.name, compat=cfg.compat,
                          tasks=tasks, average=sum(t["m_acc"] for t in tasks.values()) / len(tasks), created_at=utc_now())
    outputs = {"results": join(str(cfg.output_dir), f"results_{stamp}.json")}
    atomic_write_text(fs, join(base, f"results_{stamp}.json"), results.model_dump_json(indent=2))
    atomic_write_text(fs, join(base, "results_latest.json"), results.model_dump_json(indent=2))
    for task, rows in all_samples.items():
        text = "".join(EvalSample.model_validate(r).model_dump_json() + "\n" for r in rows)
        atomic_write_text(fs, join(base, f"samples_{task}_{stamp}.jsonl"), text)
    from caprl_kit.evaluate.report import render_report

    atomic_write_text(fs, join(base, "report.html"), render_report([(results, all_samples)]))
    outputs["report"] = join(str(cfg.output_dir), "report.html")
    report = RunReport(command="eval", output_dir=cfg.output_dir, n_items=sum(t["n_samples"] for t in tasks.values()),
                       n_ok=sum(t["n_samples"] for t in tasks.values()), duration_s=time.perf_counter() - t0,
                       outputs=outputs)
    for task, t in tasks.items():
        report.metrics[f"{task} M_Acc"] = t["m_acc"]
        report.metrics[f"{task} BoN"] = t["bon"]
        if t.get("blind_ceiling") is not None:
            report.metrics[f"{task} blind_ceiling"] = t["blind_ceiling"]
    return report
