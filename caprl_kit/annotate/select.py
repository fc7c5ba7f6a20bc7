"""Best-of-n recaptioning (``select:``): the caption stage samples ``backend.sampling.n`` captions per item into
OUTPUT/candidates/, then this stage scores every candidate with the configured quality (the reward terms of
training: QA accuracy on the item's own MCQs, length, a judge, ...) and writes the annotation rows to OUTPUT with
the best candidate as ``caption``, every candidate still in ``captions`` and their scores in ``quality``.

A shard's life: the candidates shard of the same id is read whole (rows and carried columns); the items with
captions are scored in one reward call (``score_groups``: a failure is retried item by item, so one bad QA list
fails only its item); each row gets its quality, or ``status: select_failed`` with the reason (no questions, a
reward that failed) and its captions kept; the shard is committed atomically, stats last, like every shard. Both
stages resume shard by shard, and a changed ``select`` block redoes only this stage.
"""

from __future__ import annotations

import functools
from typing import Any

from caprl_kit.annotate.config import AnnotateConfig, SelectConfig
from caprl_kit.config import config_hash
from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import join
from caprl_kit.io.parquet import read_shard, user_columns
from caprl_kit.io.readers import iter_items
from caprl_kit.io.rows import column_value
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import ShardSpec, iter_shards
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.runners.driver import Stage
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.layout import ANNOTATE_CANDIDATES_DIR
from caprl_kit.schemas.run import ShardStats

STAGE = "select"
FAILED = "select_failed"


def candidates_config(cfg: AnnotateConfig) -> AnnotateConfig:
    """The caption stage's config with select on: the same run, its shards in OUTPUT/candidates."""
    return cfg.model_copy(update={"select": None, "output_dir": join(str(cfg.output_dir), ANNOTATE_CANDIDATES_DIR)})


def quality_reward(cfg: AnnotateConfig) -> Any:
    """``select.reward`` with the length term counting the captioner's tokens unless it names a tokenizer."""
    assert cfg.select is not None
    reward = cfg.select.reward
    if reward.length.tokenizer or not any(c.name == "length" and c.weight for c in reward.components):
        return reward
    return reward.model_copy(update={"length": reward.length.model_copy(update={"tokenizer": cfg.backend.model})})


class Selector:
    """One shard: its candidates scored, the best kept (the module's docstring has the walk)."""

    def __init__(self, cfg: AnnotateConfig, progress: Progress | None = None):
        from caprl_kit.rewards.combine import CaprlReward

        assert cfg.select is not None
        self.cfg, self.select = cfg, cfg.select
        self.progress = progress or NullProgress()
        self.reward = CaprlReward(quality_reward(cfg))
        self.by = " + ".join(f"{weight} x {name}" for name, weight, _ in self.reward.terms)
        self.needs_qa = any(name == "qa_accuracy" for name, _, _ in self.reward.terms)
        self.candidates = RunDir(candidates_config(cfg).output_dir, AnnotationRow)  # type: ignore[arg-type]  # set by candidates_config
        self.run = RunDir(cfg.output_dir, AnnotationRow)  # type: ignore[arg-type]  # begin() refuses a run without one

    def __call__(self, spec: ShardSpec, items: list[Any]) -> ShardStats:
        from caprl_kit.rewards.combine import score_groups

        rows = read_shard(self.candidates.shard_url(spec.shard_id), AnnotationRow).to_pylist()
        if len(rows) != len(items) or any(r["key"] != it.key for r, it in zip(rows, items)):
            raise CaprlError(
                f"candidates shard {spec.name} does not hold the items of shard {spec.name}: the candidates and the "
                "input disagree; rerun with --overwrite"
            )
        todo, groups = [], []
        for r in rows:
            if r["status"] != "ok" or not r["captions"]:
                continue
            gt = column_value(r, self.select.qa_column) if self.needs_qa else None
            if self.needs_qa and not gt:
                r.update(status=FAILED, error_message=f"no questions in select.qa_column '{self.select.qa_column}'")
                continue
            todo.append(r)
            groups.append((r["captions"], gt, r["source"]))
        scored = score_groups(self.reward, groups) if groups else []
        if todo and all(isinstance(s, str) for s in scored):  # not one item's fault: nothing is committed
            raise CaprlError(
                f"shard {spec.name}: the quality failed for every item (e.g. {scored[0]}); fix it and rerun: finished "
                "shards are kept"
            )
        stats = StatsBuilder(spec.shard_id, AnnotationRow.schema_id())
        for r, result in zip(todo, scored):
            if isinstance(result, str):
                r.update(status=FAILED, error_message=f"the quality failed: {result}")
                continue
            scores = [float(d["score"]) for d in result]
            best = max(range(len(scores)), key=scores.__getitem__)  # the first of equals: the sampling order
            names = [k for k, v in result[0].items() if k.endswith("_reward") and _number(v)]
            terms = [[float(d[k]) for k in names] for d in result]
            quality = {"by": self.by, "chosen": best, "scores": scores, "names": names, "terms": terms}
            r.update(caption=r["captions"][best], quality=quality)
            stats.add_metric("select_chosen_sum", scores[best])
            stats.add_metric("select_candidates_sum", sum(scores) / len(scores))
            stats.add_metric("select_scored", 1)
        for r in rows:
            stats.add(r["status"], r["error_message"])
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built, user_columns(self.cfg.input.carry_columns, rows))
        self.progress.advance(STAGE, items=len(rows))
        return built


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def select_hash(cfg: AnnotateConfig) -> str:
    """What the chosen rows depend on: the candidates (the whole caption config) and the quality."""
    return config_hash(candidates=candidates_config(cfg).fingerprint(), select=cfg.select)


def make_selector(cfg: AnnotateConfig, progress: Progress) -> Selector:
    return Selector(cfg, progress)


def select_stage(cfg: AnnotateConfig, engines: tuple[Any, ...], redo: frozenset[int] = frozenset()) -> Stage:
    """The select stage, declared: one annotation row per item in OUTPUT, from the candidates shard of the same id."""
    return Stage(
        STAGE,
        "annotate",
        RunDir(cfg.output_dir, AnnotationRow),  # type: ignore[arg-type]  # begin() refuses a run without one
        select_hash(cfg),
        functools.partial(make_selector, cfg),
        lambda: iter_shards(iter_items(cfg.input), cfg.sharding.shard_size),
        engines=engines,
        redo=redo,
    )


def quality_of(cfg: SelectConfig) -> dict[str, Any]:
    """The engines the quality builds, by config key (checked with the captioner before the run)."""
    from caprl_kit.rewards.combine import reward_engines

    return reward_engines(cfg.reward, "select.reward")
