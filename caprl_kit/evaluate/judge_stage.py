"""The judge stage (``judge.py``'s judges on a task's open-ended answers). ``judged`` gives a task's answer rows
their verdicts: a sharded, resumable stage in ``judgments/<task>/`` (eval_sample rows: the answer row with the
verdict's score), or, with ``judge.skip`` or without a judge, the verdicts already stored there for the same answers,
the others left ``awaiting_judge`` (out of M_Acc/BoN, counted)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Response, SamplingParams
from caprl_kit.config import config_hash
from caprl_kit.evaluate.caption_stage import ShardTally
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.data import Sample
from caprl_kit.evaluate.judge import Judge
from caprl_kit.evaluate.layouts import LAYOUTS
from caprl_kit.io.fs import join
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import Fingerprint, ShardSpec, iter_shards
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.progress import Progress
from caprl_kit.runners.driver import Listing, Stage, run_stage
from caprl_kit.runners.stream import ShardStream, Work
from caprl_kit.schemas.evaluation import EvalSample
from caprl_kit.schemas.layout import EVAL_JUDGMENTS_DIR
from caprl_kit.schemas.run import ShardStats

if TYPE_CHECKING:
    from caprl_kit.evaluate.config import BenchmarkConfig
    from caprl_kit.evaluate.layouts import BenchmarkLayout

#: an open-ended answer's status until a verdict scores it
AWAITING = "awaiting_judge"


def judge_engines(cfg: EvalConfig) -> dict[str, Any]:
    """The judge's engine, for the checks before a run writes anything: none when it is skipped or has nothing to
    judge."""
    active = cfg.judge is not None and not cfg.judge.skip
    judged = any(LAYOUTS.get(b.layout).judge is not None for b in cfg.benchmarks)
    return {"judge.backend": cfg.judge.backend} if active and judged and cfg.judge else {}


def judged(
    cfg: EvalConfig,
    bench: BenchmarkConfig,
    layout: BenchmarkLayout,
    samples: list[Sample],
    rows: list[dict[str, Any]],
    progress: Progress,
    shards: ShardTally | None = None,
) -> list[dict[str, Any]]:
    """``rows`` with every open-ended answer given its verdict (judged now, or stored by an earlier judge for this
    very answer) or left ``awaiting_judge``; other rows as they are."""
    judge = layout.judge
    if judge is None:
        return rows
    by_id = {s.id: s for s in samples}
    pending = [
        r
        for r in rows
        if r["status"] == "ok" and r["score"] is None and (s := by_id.get(r["sample_id"])) is not None and s.open_ended
    ]
    if not pending:
        return rows
    run_dir = RunDir(join(str(cfg.output_dir), EVAL_JUDGMENTS_DIR.format(task=bench.name)), EvalSample)
    if cfg.judge is not None and not cfg.judge.skip:
        items = [(r, by_id[r["sample_id"]].raw_question or r["question"]) for r in pending]
        fp = Fingerprint()
        for r, question in items:
            fp.add(r["sample_id"], r["caption_index"], r["response"], r["gold"], question)
        stage = Stage(
            f"judge {bench.name}",
            f"eval/{bench.name}/judge",
            run_dir,
            config_hash(judge=cfg.judge.backend, prompt=[judge.system, judge.template]),
            functools.partial(JudgeWorker, cfg, bench.name, bench.layout),
            lambda: iter_shards(items, cfg.sharding.shard_size),
            engines=(cfg.judge.backend,),
        )
        written, skipped = run_stage(cfg, stage, Listing(fp.hexdigest(), len(items)), progress=progress)
        if shards is not None:
            shards.add(len(written), skipped)
        why = "the judge gave no verdict"
    elif cfg.judge is not None:
        why = "not judged (judge.skip): judge it with caprl eval judge RUN_DIR"
    else:
        why = "not judged (no judge is set): set judge and run caprl eval judge RUN_DIR"
    stored = {
        (v["sample_id"], v["caption_index"]): v
        for url in run_dir.shard_urls()
        for v in read_shard(url, EvalSample).to_pylist()
    }
    out = []
    waiting = {(r["sample_id"], r["caption_index"]) for r in pending}
    for r in rows:
        key = (r["sample_id"], r["caption_index"])
        if key not in waiting:
            out.append(r)
            continue
        v = stored.get(key)
        if v is not None and v["response"] == r["response"] and v["gold"] == r["gold"]:
            out.append(v)  # a verdict on this very answer (a changed answer is judged again)
        else:
            out.append({**r, "status": AWAITING, "error_message": why})
    return out


class JudgeWorker:
    """The judge stage for one task on the streaming engine: each open-ended answer row -> the judge -> the row with
    the verdict's score; a failed request or a reply with no verdict is a ``judge_failed`` row, never a dead shard."""

    def __init__(self, cfg: EvalConfig, task: str, layout: str, progress: Progress):
        assert cfg.judge is not None
        judge = LAYOUTS.get(layout).judge
        assert judge is not None
        self.judge: Judge = judge
        self.task, self.progress = task, progress
        self.backend = build_backend(cfg.judge.backend)
        self.sampling = SamplingParams.from_config(cfg.judge.backend.sampling).with_(n=1)
        self.run = RunDir(join(str(cfg.output_dir), EVAL_JUDGMENTS_DIR.format(task=task)), EvalSample)
        self.engine_label = f"eval judge with {cfg.judge.backend.name}:{cfg.judge.backend.model}"

    def plan(self, spec: ShardSpec, items: list[tuple[dict[str, Any], str]]) -> Iterator[Work]:
        for row, question in items:
            request = self.judge.request(question, row["gold"], row["response"], self.sampling)
            yield Work([request], functools.partial(self._judged, row))

    def _judged(self, row: dict[str, Any], got: list[Response]) -> list[dict[str, Any]]:
        resp = got[0]
        self.progress.advance(f"judge {self.task}", items=1, failed=int(not resp.ok))
        if not resp.ok:
            return [{**row, "score": None, "status": "judge_failed", "error_message": str(resp.error)}]
        reply = resp.texts[0]
        prediction, value = self.judge.verdict(reply)
        if value is None:
            message = f"the judge's reply is not a verdict: {reply[:200]!r}"
            return [{**row, "score": None, "status": "judge_failed", "error_message": message}]
        shown = row["prediction"] if prediction is None else prediction
        return [{**row, "prediction": shown, "score": value, "metric": self.judge.metric, "error_message": None}]

    def commit(
        self,
        spec: ShardSpec,
        items: list[tuple[dict[str, Any], str]],
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

    def __call__(self, spec: ShardSpec, items: list[tuple[dict[str, Any], str]]) -> ShardStats:
        return next(iter(self.open_stream().run([(spec, items)])))
