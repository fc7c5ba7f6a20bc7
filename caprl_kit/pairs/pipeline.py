"""caprl train pairs: a QA dataset's images -> the captioner's n samples (an annotate run in OUTPUT/samples) ->
every caption scored by the CapRL reward (OUTPUT/scored shards, on the one sharded-stage driver) -> chosen/rejected
pairs in TRL's DPO format (OUTPUT/pairs.parquet + pairs.jsonl) and pairs_summary.json.

Both stages resume shard by shard and refuse a changed config; the pairs are chosen again on every run from the
scored captions (``pairs.*`` may change between runs without rescoring anything).
"""

from __future__ import annotations

import functools
import json
import posixpath
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from caprl_kit import chat
from caprl_kit.config import config_hash
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.parquet import read_shard, write_shard
from caprl_kit.io.readers import expand_paths, paths_label
from caprl_kit.io.rows import iter_jsonl
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import Fingerprint, ShardSpec, iter_shards
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.log import get_logger
from caprl_kit.pairs.config import PairOptions, PairsConfig
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.combine import reward_engines
from caprl_kit.runners.driver import Listing, Stage, begin, command, run_stage
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.layout import PAIRS, PAIRS_JSONL, PAIRS_SAMPLES_DIR, PAIRS_SCORED_DIR, PAIRS_SUMMARY
from caprl_kit.schemas.pairs import PreferencePairRow, ScoredCaptionRow
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)


# --------------------------------------------------------------------------- the QA rows


def _is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


def _files(cfg: PairsConfig) -> list[str]:
    """The data files ``data.path`` names: one file, or a glob's matches / a list's files (``expand_paths``), all
    Parquet or all JSONL (the sampling run reads them as one input of one format)."""
    d = cfg.data
    files = expand_paths(d.path, "data.path", "dataset/train-*.parquet")
    if files is None:
        assert isinstance(d.path, str)  # a list is files (expand_paths)
        fs, path = url_to_fs(d.path)
        if not fs.exists(path) or fs.isdir(path):
            raise ConfigError(
                [
                    ConfigIssue(
                        "data.path",
                        f"{d.path} " + ("is a folder" if fs.exists(path) else "does not exist"),
                        "point it at curated QA files (caprl curate's dataset/train.parquet or .jsonl; several: a "
                        "glob or a list)",
                    )
                ]
            )
        return [d.path]
    if len({_is_parquet(f) for f in files}) > 1:
        raise CaprlError(
            f"data.path={paths_label(d.path)} mixes Parquet and JSONL files; give files of one format (the "
            "sampling run reads them as one input)"
        )
    return files


def _file_columns(path: str) -> list[str]:
    """A data file's columns (Parquet schema, else the first JSONL row's keys)."""
    import pyarrow.parquet as pq

    if _is_parquet(path):
        fs, p = url_to_fs(path)
        with fs.open(p, "rb") as fh:
            return list(pq.ParquetFile(fh).schema_arrow.names)
    return list(next(iter_jsonl(path, key="data.path"), {}))


def _columns(cfg: PairsConfig) -> list[str]:
    """The columns every data file has."""
    per_file = [_file_columns(f) for f in _files(cfg)]
    return [c for c in per_file[0] if all(c in names for names in per_file[1:])]


def iter_rows(cfg: PairsConfig) -> Iterator[dict[str, Any]]:
    """The QA rows, streamed, one file after the other: ``{id, key, images, ground_truth}`` with image paths resolved
    as the sampling run resolves them (against ``data.media_root``, else each data file's folder). ``key`` is the
    sampling run's item key for the row."""
    import pyarrow.parquet as pq

    from caprl_kit.io.readers import _absolute, _resolve

    d = cfg.data
    names = _columns(cfg)
    missing = [c for c in (d.image_key, "reward_model") if c not in names]
    if missing:
        raise ConfigError(
            [
                ConfigIssue(
                    "data.path",
                    f"{paths_label(d.path)} has no column(s) {', '.join(missing)} (it has "
                    f"{', '.join(names) or 'none'})",
                    "pairs need image paths (data.image_key) "
                    "and reward_model.ground_truth, as caprl curate writes them",
                )
            ]
        )
    has_id = d.id_key in names

    def raw(file: str) -> Iterator[dict[str, Any]]:
        if _is_parquet(file):
            fs, path = url_to_fs(file)
            with fs.open(path, "rb") as fh:
                cols = [c for c in (d.id_key, d.image_key, "reward_model") if c in names]
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=1024, columns=cols):
                    yield from batch.to_pylist()
        else:
            yield from iter_jsonl(file)

    i = 0  # the row's number in the whole input (ids of rows without one)
    for file in _files(cfg):
        base = _absolute(d.media_root) if d.media_root else _absolute(posixpath.dirname(file.rstrip("/")))
        for n, row in enumerate(raw(file)):
            if d.limit and i >= d.limit:
                return
            media = row.get(d.image_key)
            first = (media[0] if media else None) if isinstance(media, list) else media
            if not isinstance(first, str) or not first:
                raise CaprlError(
                    f"{file} row {n}: no image path in '{d.image_key}' (embedded image bytes are not "
                    "supported here: write the images to files and list their paths)"
                )
            rm = row.get("reward_model") or {}
            key = str(row.get(d.id_key)) if has_id else first  # what the sampling run keys the row by (annotate)
            # the samples caption the first image only, so the pairs carry that one
            yield {
                "row": i,
                "id": key if has_id else str(i),
                "key": key,
                "images": [_resolve(base, first)],
                "ground_truth": rm.get("ground_truth") if isinstance(rm, dict) else None,
            }
            i += 1


def listing(cfg: PairsConfig) -> Listing:
    fp = Fingerprint()
    for r in iter_rows(cfg):
        fp.add(r["id"], r["images"], r["ground_truth"])
    return Listing(fp.hexdigest(), fp.count)


# --------------------------------------------------------------------------- stage 1: the samples


def sampling_config(cfg: PairsConfig) -> Any:
    """The annotate run behind the samples: the data file itself is its input (same rows, same order, same shards)."""
    from caprl_kit.annotate.config import AnnotateConfig

    d = cfg.data
    names = _columns(cfg)
    return AnnotateConfig.model_validate(
        {
            "input": {
                "path": d.path,
                "format": "parquet" if _is_parquet(_files(cfg)[0]) else "jsonl",
                "media_type": "image",
                "path_column": d.image_key,
                "key_column": d.id_key if d.id_key in names else None,
                "media_root": d.media_root,
                "limit": d.limit,
            },
            "backend": cfg.captioner.model_dump(),
            "prompt": {"image": cfg.prompt},
            "media": cfg.media.model_dump(),
            "sharding": cfg.sharding.model_dump(),
            "decode": cfg.decode.model_dump(),
            "runner": cfg.runner.model_dump(),
            "output_dir": join(str(cfg.output_dir), PAIRS_SAMPLES_DIR),
        }
    )


# --------------------------------------------------------------------------- stage 2: the scores


def score_hash(cfg: PairsConfig) -> str:
    """What the scores depend on; where the reward service runs (URLs, timeouts) is volatile, whether one scores
    is not."""
    return config_hash(
        data=cfg.data, captioner=cfg.captioner, media=cfg.media, reward=cfg.reward, prompt=PROMPTS.get(cfg.prompt)
    )


class ScoreWorker:
    """One shard of QA rows: their sampled captions (the samples run's shard of the same id) -> the reward -> one
    scored_caption row per caption. An item without captions and a caption whose reward failed are rows with a
    status; a reward that fails for a whole shard is retried item by item, so one bad QA list fails only itself."""

    def __init__(self, cfg: PairsConfig, progress: Progress | None = None):
        from caprl_kit.rewards.combine import CaprlReward

        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.reward = CaprlReward(training_reward(cfg))
        self.samples = RunDir(join(str(cfg.output_dir), PAIRS_SAMPLES_DIR), AnnotationRow)
        self.run = RunDir(join(str(cfg.output_dir), PAIRS_SCORED_DIR), ScoredCaptionRow)

    def __call__(self, spec: ShardSpec, items: list[dict[str, Any]]) -> ShardStats:
        cols = ["key", "captions", "completion_tokens", "finish_reasons", "caption_flags", "status", "error_message"]
        sampled = read_shard(self.samples.shard_url(spec.shard_id), AnnotationRow, columns=cols).to_pylist()
        if len(sampled) != len(items) or any(s["key"] != it["key"] for s, it in zip(sampled, items)):
            raise CaprlError(
                f"samples shard {spec.name} does not hold the rows of QA shard {spec.name}: the samples "
                "run and the data file disagree; rerun with --overwrite"
            )
        stats = StatsBuilder(spec.shard_id, ScoredCaptionRow.schema_id())
        rows: list[dict[str, Any]] = []
        todo = [(it, s) for it, s in zip(items, sampled) if s["status"] == "ok" and s["captions"]]
        from caprl_kit.rewards.combine import score_groups

        scored = score_groups(self.reward, [(s["captions"], it["ground_truth"], it["images"]) for it, s in todo])
        if todo and all(isinstance(r, str) for r in scored):  # not one item's fault: nothing is committed
            raise CaprlError(
                f"shard {spec.name}: the reward failed for every item (e.g. {scored[0]}); fix it "
                "and rerun: finished shards are kept"
            )
        by_key = {id(s): r for (_, s), r in zip(todo, scored)}
        for it, s in zip(items, sampled):
            base = {"row": it["row"], "id": it["id"], "key": it["key"], "images": it["images"]}
            result = by_key.get(id(s))
            if result is None:
                rows.append(
                    {
                        **base,
                        "caption_index": -1,
                        "status": s["status"] if s["status"] != "ok" else "no_caption",
                        "error_message": s["error_message"] or "the captioner returned nothing",
                    }
                )
                continue
            for ci, cap in enumerate(s["captions"]):
                common = {
                    **base,
                    "caption_index": ci,
                    "caption": cap,
                    "completion_tokens": _at(s["completion_tokens"], ci),
                    "finish_reason": _at(s["finish_reasons"], ci),
                    "caption_flags": _at(s["caption_flags"], ci) or [],
                }
                if isinstance(result, str):
                    rows.append({**common, "status": "reward_failed", "error_message": result})
                else:
                    d = result[ci]
                    rows.append({**common, "score": float(d["score"]), "qa_reward": d.get("qa_reward"), "status": "ok"})
        for r in rows:
            stats.add(r["status"], r.get("error_message"))
            if r["status"] == "ok":
                stats.add_metric("score_sum", r["score"])
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        self.progress.advance("score", items=len(rows))  # rows, as the other runners count a shard's stats
        return built


def training_reward(cfg: PairsConfig) -> Any:
    """``cfg.reward`` with the length term counting the captioner's tokens, as training counts the policy's (through
    the term's own ``length.tokenizer``, loaded when the term is used) unless it names a tokenizer already."""
    if cfg.reward.length.tokenizer:
        return cfg.reward
    length = cfg.reward.length.model_copy(update={"tokenizer": cfg.captioner.model})
    return cfg.reward.model_copy(update={"length": length})


def _at(values: list[Any] | None, i: int) -> Any:
    return values[i] if values and i < len(values) else None


def make_scorer(cfg: PairsConfig, progress: Progress) -> ScoreWorker:
    return ScoreWorker(cfg, progress)


# --------------------------------------------------------------------------- the pairs


def select_pairs(captions: list[dict[str, Any]], opts: PairOptions) -> tuple[list[tuple[dict, dict]], str | None]:
    """One image's scored captions -> its pairs (chosen, rejected), largest margin first, each caption in at most one
    pair; or why it has none (``failed``, ``no_margin``, ``flagged``, ``length``)."""
    ok = [c for c in captions if c["status"] == "ok"]
    if len(ok) < 2:
        return [], "failed"
    candidates: list[Any] = []
    reasons: Counter[str] = Counter()
    for a in ok:
        for b in ok:
            margin = a["score"] - b["score"]
            if margin <= 0 or margin < opts.min_margin - 1e-9:
                continue
            if set(a["caption_flags"] or []) & set(opts.skip_flagged):
                reasons["flagged"] += 1
                continue
            ta, tb = (
                a["completion_tokens"] or len(a["caption"].split()),
                b["completion_tokens"] or len(b["caption"].split()),
            )
            if opts.max_length_ratio and max(ta, tb) > opts.max_length_ratio * max(1, min(ta, tb)):
                reasons["length"] += 1
                continue
            candidates.append((margin, -abs(ta - tb), -a["caption_index"], -b["caption_index"], a, b))
    if not candidates:
        return [], reasons.most_common(1)[0][0] if reasons else "no_margin"
    candidates.sort(key=lambda c: c[:4], reverse=True)
    used: set[int] = set()
    pairs = []
    for *_, a, b in candidates:
        if a["caption_index"] in used or b["caption_index"] in used:
            continue
        pairs.append((a, b))
        used.update((a["caption_index"], b["caption_index"]))
        if len(pairs) == opts.per_image:
            break
    return pairs, None


def export_pairs(cfg: PairsConfig) -> dict[str, Any]:
    """pairs.parquet (+ .jsonl, same rows: TRL's conversational DPO format) and pairs_summary.json."""

    run = RunDir(join(str(cfg.output_dir), PAIRS_SCORED_DIR), ScoredCaptionRow)
    prompt = [chat.message("user", PROMPTS.get(cfg.prompt))]
    groups: dict[int, list[dict[str, Any]]] = {}
    for url in run.shard_urls():
        for r in read_shard(url, ScoredCaptionRow).to_pylist():
            groups.setdefault(r["row"], []).append(r)  # by row: ids need not be unique
    pairs: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for rows in groups.values():
        chosen, why = select_pairs(rows, cfg.pairs)
        if why:
            dropped[why] += 1
        for a, b in chosen:
            pairs.append(
                {
                    "id": a["id"],
                    "images": a["images"],
                    "prompt": prompt,
                    "chosen": [chat.message("assistant", a["caption"])],
                    "rejected": [chat.message("assistant", b["caption"])],
                    "chosen_score": a["score"],
                    "rejected_score": b["score"],
                    "margin": a["score"] - b["score"],
                    "chosen_tokens": a["completion_tokens"],
                    "rejected_tokens": b["completion_tokens"],
                }
            )
    out = str(cfg.output_dir)
    write_shard(join(out, PAIRS), pairs, PreferencePairRow)
    fs, base = url_to_fs(out)
    atomic_write_text(fs, join(base, PAIRS_JSONL), "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    scored = [r for rows in groups.values() for r in rows if r["status"] == "ok"]
    longer = [
        p["chosen_tokens"] > p["rejected_tokens"]
        for p in pairs
        if p["chosen_tokens"] is not None and p["rejected_tokens"] is not None
    ]
    summary = {
        "images": len(groups),
        "images_with_pairs": len({p["id"] for p in pairs}),
        "pairs": len(pairs),
        "images_without_pairs": dict(dropped),
        "captions_scored": len(scored),
        "captions_failed": sum(r["status"] != "ok" for rows in groups.values() for r in rows),
        "images_reward_failed": sum(any(r["status"] == "reward_failed" for r in rows) for rows in groups.values()),
        "mean_score": sum(r["score"] for r in scored) / len(scored) if scored else None,
        "mean_margin": sum(p["margin"] for p in pairs) / len(pairs) if pairs else None,
        "chosen_longer_share": sum(longer) / len(longer) if longer else None,
        "mean_chosen_tokens": _mean([p["chosen_tokens"] for p in pairs]),
        "mean_rejected_tokens": _mean([p["rejected_tokens"] for p in pairs]),
        "options": cfg.pairs.model_dump(mode="json"),
    }
    atomic_write_text(fs, join(base, PAIRS_SUMMARY), json.dumps(summary, indent=2))
    if not pairs:
        log.warning("no pairs: %s", dict(dropped) or "no scored captions")
    return summary


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------- the command


def plan(cfg: PairsConfig) -> list[str]:
    try:
        n = listing(cfg).n_items
        head = f"read {n} QA row(s) from {paths_label(cfg.data.path)}"
    except CaprlError as exc:
        head = f"WARNING: cannot read the data yet: {exc}"
    s = cfg.captioner.sampling
    terms = " + ".join(f"{c.weight} x {c.name}" for c in cfg.reward.components if c.weight)
    where = (
        f"reward service {', '.join(cfg.reward.qa.service.urls)}, its own qa config"
        if cfg.reward.qa.service
        else f"answerer {cfg.reward.qa.answerer.name}:{cfg.reward.qa.answerer.model or ''}, mode {cfg.reward.qa.mode}"
    )
    p = cfg.pairs
    return [
        head,
        f"sample {s.n} captions per image with {cfg.captioner.name}:{cfg.captioner.model} (temperature "
        f"{s.temperature}, max_tokens {s.max_tokens}) into {join(cfg.output_dir or '<--output>', PAIRS_SAMPLES_DIR)}",
        f"score every caption with {terms} ({where})",
        f"pair them: margin >= {p.min_margin}, at most {p.per_image} pair(s) per image, length ratio "
        f"{p.max_length_ratio or 'free'}, never choose {', '.join(p.skip_flagged) or 'any flag'}; write {PAIRS}, "
        f"{PAIRS_JSONL} and {PAIRS_SUMMARY}",
    ]


@command
def run(cfg: PairsConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    from caprl_kit.annotate.pipeline import caption

    progress = progress or NullProgress()
    t0 = time.perf_counter()
    scoring = reward_engines(cfg.reward, "reward")
    seen = begin(
        cfg,
        "pairs",
        lambda: listing(cfg),
        {"captioner": cfg.captioner, **scoring},
        overwrite=overwrite,
        empty=lambda: (
            f"data.path {paths_label(cfg.data.path)} has no rows, so there is nothing to do and nothing was "
            f"written: looked for curated QA rows with '{cfg.data.image_key}' (data.image_key) and "
            "'reward_model'. Point data.path at caprl curate's dataset/train.parquet"
        ),
    )
    sampled = caption(sampling_config(cfg), progress)  # stage 1, in OUTPUT/samples
    stage = Stage(
        "score",
        "pairs/score",
        RunDir(join(str(cfg.output_dir), PAIRS_SCORED_DIR), ScoredCaptionRow),
        score_hash(cfg),
        functools.partial(make_scorer, cfg),
        lambda: iter_shards(iter_rows(cfg), cfg.sharding.shard_size),
        total=seen.n_items * cfg.captioner.sampling.n,
        engines=tuple(scoring.values()),
    )
    written, skipped = run_stage(cfg, stage, seen, progress=progress)
    summary = export_pairs(cfg)
    report = RunReport(
        command="pairs",
        output_dir=str(cfg.output_dir),
        n_items=seen.n_items,
        n_ok=summary["images_with_pairs"],
        shards_done=len(written) + sampled.shards_done,
        shards_skipped=skipped + sampled.shards_skipped,  # both stages: samples and scores
        duration_s=time.perf_counter() - t0,
    )
    report.n_failed = sampled.n_failed + summary["images_reward_failed"]
    report.status_counts = {"with_pairs": summary["images_with_pairs"], **summary["images_without_pairs"]}
    report.metrics.update(
        {
            k: float(summary[k])
            for k in ("pairs", "captions_scored", "mean_score", "mean_margin", "chosen_longer_share")
            if summary[k] is not None
        }
    )
    out = str(cfg.output_dir)
    report.outputs.update(
        {
            "pairs": join(out, PAIRS),
            "pairs.jsonl": join(out, PAIRS_JSONL),
            "summary": join(out, PAIRS_SUMMARY),
            "scored": join(out, PAIRS_SCORED_DIR),
        }
    )
    log.info("pairs: %d pair(s) from %d image(s)", summary["pairs"], summary["images"])
    return report
