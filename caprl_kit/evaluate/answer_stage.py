"""Eval's stage 2 for one task: the answerer reads each caption and the question (one request per caption slot),
each answer is scored into an eval_sample row (sharded, resumable in ``answers/<task>``); ``summarize`` reduces the
rows to BoN and M_Acc."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, Response, SamplingParams
from caprl_kit.config import config_hash
from caprl_kit.evaluate.caption_stage import ShardTally
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.data import Sample
from caprl_kit.evaluate.metrics import score
from caprl_kit.io.fs import join
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import Fingerprint, ShardSpec, iter_shards
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.progress import Progress
from caprl_kit.prompts import PROMPTS
from caprl_kit.runners.driver import Listing, Stage, run_stage
from caprl_kit.runners.stream import ShardStream, Work
from caprl_kit.schemas.evaluation import EvalSample
from caprl_kit.schemas.layout import EVAL_ANSWERS_DIR
from caprl_kit.schemas.run import ShardStats

CAPTION_SENTENCE = "Here is a detailed caption of {what}: {caption}. Please answer the question based on the caption."

#: (response, sample) -> (prediction, score); a None score: the judge scores the answer (``judge.py``)
Scoring = Callable[[str, Sample], tuple[str | None, float | None]]


def metric_scoring(
    response: str, sample: Sample, scorer: str, compat: Literal["fixed", "official"]
) -> tuple[str | None, float]:
    """The ``scorer`` metric of ``response`` against the sample's gold (eval's own layout)."""
    return score(response, sample.gold, scorer, compat)


def answer_stage(
    cfg: EvalConfig,
    task: str,
    scorer: str,
    samples: list[Sample],
    captions: dict[str, list[str]],
    no_caption: dict[str, str],
    digest: str | None,
    progress: Progress,
    shards: ShardTally | None = None,
    scoring: Scoring | None = None,
) -> list[dict[str, Any]]:
    """Answer and score every caption slot of ``samples`` (an item without a caption is one ``no_caption`` row);
    returns the task's eval_sample rows, those of earlier runs included. ``scoring`` scores an answer (default:
    the ``scorer`` metric on the sample's gold)."""
    stage = Stage(
        f"answer {task}",
        f"eval/{task}",
        RunDir(join(str(cfg.output_dir), EVAL_ANSWERS_DIR.format(task=task)), EvalSample),
        _stage2_hash(cfg, digest),
        functools.partial(AnswerWorker, cfg, task, scorer, captions, no_caption, scoring=scoring),
        lambda: iter_shards(samples, cfg.sharding.shard_size),
        total=sum(max(1, len(captions.get(s.media) or [])) for s in samples),
        engines=(cfg.answerer,),
    )
    written, skipped = run_stage(cfg, stage, Listing(_fingerprint(samples), len(samples)), progress=progress)
    if shards is not None:
        shards.add(len(written), skipped)
    return [r for url in stage.run_dir.shard_urls() for r in read_shard(url, EvalSample).to_pylist()]


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
        scoring: Scoring | None = None,
    ):
        self.cfg, self.task, self.scorer, self.captions, self.progress = cfg, task, scorer, captions, progress
        self.no_caption = no_caption
        self.scoring = scoring or functools.partial(metric_scoring, scorer=scorer, compat=cfg.compat)
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
        pred, value = self.scoring(resp.texts[0], s)
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


def _stage2_hash(cfg: EvalConfig, captions_digest: str | None = None) -> str:
    """What the answers depend on; the scorer is not part of it, ``summarize`` rescores every answer."""
    parts: dict[str, Any] = {"answerer": cfg.answerer}
    if captions_digest is None:
        parts.update(
            captioner=cfg.captioner,
            media=cfg.media,
            caption_prompt=[PROMPTS.get(cfg.caption_prompt), PROMPTS.get(cfg.video_caption_prompt)],
        )
    else:  # precomputed captions: the answers depend on those captions, not on a captioner
        parts["captions"] = captions_digest
    return config_hash(**parts)


def summarize(
    rows: list[dict[str, Any]],
    compat: Literal["fixed", "official"],
    rescore: bool = True,
    scorer: str | None = None,
) -> dict[str, Any]:
    """BoN (mean of per-sample max) and M_Acc (mean of per-sample mean) over the scored caption slots. Slots that
    were not scored (no caption, answerer failed) are left out and counted; a sample with no scored slot is failed.
    ``rescore`` scores every answer again, with ``scorer`` (else the row's own metric) and ``compat``: the rows'
    ``metric`` and ``score`` are set to what was used."""
    per: dict[str, list[float]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["status"] != "ok":
            reasons.setdefault(r["sample_id"], {})[r["status"]] = r.get("error_message") or ""
            continue
        value = r["score"]
        if rescore:  # compat and the scorer can change without re-answering
            r["metric"] = scorer or r["metric"]
            value = r["score"] = score(r["response"], r["gold"], r["metric"], compat)[1]
        per.setdefault(r["sample_id"], []).append(value)
    failed: dict[str, int] = {}
    for sid, why in reasons.items():
        if sid not in per:
            for status in why:
                failed[status] = failed.get(status, 0) + 1
    n = len(per)
    return {
        "metric": scorer or (rows[0]["metric"] if rows else "none"),
        "m_acc": sum(sum(v) / len(v) for v in per.values()) / n if n else None,
        "bon": sum(max(v) for v in per.values()) / n if n else None,
        "n_samples": n,
        "n_failed": len([sid for sid in reasons if sid not in per]),
        "failed": failed,
    }
