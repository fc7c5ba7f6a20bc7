"""The held-out QA utility (``qa_utility:``): caption a curated set's media, score each caption with the QA reward
machinery against the item's own questions (held-out QA accuracy), the same with the captions cut at k tokens
(utility@k: ``evaluate/utility_at_k.py``), and the image-blind ceiling (the best single fixed caption) to compare it
with."""

from __future__ import annotations

import json
from typing import Any

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.evaluate.answer_stage import summarize
from caprl_kit.evaluate.caption_stage import ShardTally, captions_for
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.faithfulness import task_faithfulness
from caprl_kit.evaluate.utility_at_k import utility_at_k
from caprl_kit.io.fs import url_to_fs
from caprl_kit.io.readers import paths_label
from caprl_kit.io.rows import read_rows
from caprl_kit.progress import Progress


def dataset_files(dataset: str | list[str]) -> list[str]:
    """The files ``qa_utility.dataset`` names: one file, or a glob's matches / a list's files (``expand_paths``)."""
    from caprl_kit.io.readers import expand_paths

    return expand_paths(dataset, "qa_utility.dataset", "dataset/val-*.parquet") or [str(dataset)]


def refuse_empty_dataset(dataset: str | list[str]) -> None:
    """A held-out QA set (``qa_utility.dataset``) with no rows is refused before anything is written: its score
    over nothing would be no number at all; so is a file that is not curated QA (no images or videos, or no
    reward_model), and a glob that matches nothing, naming the key. A missing or unreadable file is left to the read
    that reports it."""
    import pyarrow.parquet as pq

    n_rows = 0
    for file in dataset_files(dataset):
        fs, path = url_to_fs(file)
        try:
            with fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh)
                n_rows += meta.metadata.num_rows
                names = set(meta.schema_arrow.names)
        except Exception:  # noqa: BLE001 - reported where the dataset is read
            return
        if not {"images", "videos"} & names or "reward_model" not in names:
            raise CaprlError(
                f"qa_utility.dataset: {file} is not a curated QA file: it has {', '.join(sorted(names))}, not "
                "images or videos and reward_model (caprl curate's dataset/train.parquet or val.parquet)"
            )
    if n_rows == 0:
        raise CaprlError(
            f"qa_utility.dataset {paths_label(dataset)} has no rows, so nothing was written: looked for curated QA "
            "rows (images or videos, reward_model.ground_truth) as caprl curate writes them to "
            "dataset/val.parquet. Point qa_utility.dataset at a non-empty one"
        )


def run_qa_utility(
    cfg: EvalConfig, progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """Caption the curated set's images, score the captions with the QA reward machinery (held-out QA accuracy)."""
    import pyarrow.parquet as pq

    from caprl_kit.rewards.base import decode_ground_truth
    from caprl_kit.rewards.qa import qa_scorer

    qu = cfg.qa_utility
    assert qu is not None, "run_qa_utility runs only when qa_utility is set"
    rows = []
    for file in dataset_files(qu.dataset):  # one file after the other
        fs, path = url_to_fs(file)
        with fs.open(path, "rb") as fh:
            rows += pq.read_table(fh).to_pylist()
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
    column = cfg.faithfulness.verifier.reference_column if cfg.faithfulness else None
    faithfulness = task_faithfulness(
        cfg, "qa_utility", media, captions, progress, {m: r.get(column) for r, (m, _) in zip(rows, media)}
    )
    summary = {
        **summarize(samples, cfg.compat, rescore=False),
        "caption_monitors": monitors,
        "cannot_answer_rate": sum(offered) / len(offered) if offered else None,
        "faithfulness": faithfulness,
        "utility_at_k": utility_at_k(
            cfg, scorer, caps, gts, index, out.scores, progress, (faithfulness or {}).get("claim_precision")
        ),
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
