"""Eval's faithfulness column (``faithfulness:``, off by default): the claim precision of each task's captions
(``rewards/faithfulness.py``), each item's captions checked once against the item's image or video (evidence:
media) or, for the held-out QA utility, the curated rows' reference caption (evidence: reference)."""

from __future__ import annotations

from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.progress import Progress

#: unsupported claims kept in a task's result for inspection
EXAMPLES = 20


def faithfulness_engines(cfg: EvalConfig) -> dict[str, Any]:
    """The engines the column builds, by config key (checked before the run writes anything)."""
    f = cfg.faithfulness
    if f is None:
        return {}
    engines: dict[str, Any] = {"faithfulness.verifier.backend": f.verifier.backend}
    if f.splitter.backend is not None:
        engines["faithfulness.splitter.backend"] = f.splitter.backend
    return engines


def refuse_missing_references(cfg: EvalConfig) -> None:
    """evidence: reference reads the held-out rows' ``reference_column``: a qa_utility dataset without it is refused
    before anything is written, naming the key. A file that cannot be read is left to the read that reports it."""
    import pyarrow.parquet as pq

    from caprl_kit.evaluate.qa_utility import dataset_files
    from caprl_kit.io.fs import url_to_fs

    f = cfg.faithfulness
    if f is None or f.verifier.evidence != "reference" or cfg.qa_utility is None:
        return
    column = f.verifier.reference_column
    for file in dataset_files(cfg.qa_utility.dataset):
        fs, path = url_to_fs(file)
        try:
            with fs.open(path, "rb") as fh:
                names = set(pq.ParquetFile(fh).schema_arrow.names)
        except Exception:  # noqa: BLE001 - reported where the dataset is read
            return
        if column not in names:
            raise CaprlError(
                f"faithfulness.verifier.reference_column: {file} has no '{column}' column (it has "
                f"{', '.join(sorted(names))}): name the column holding each item's reference caption, or check "
                "against the media (faithfulness.verifier.evidence: media with a VLM verifier)"
            )


def task_faithfulness(
    cfg: EvalConfig,
    task: str,
    media: list[tuple[str, str]],
    captions: dict[str, list[str]],
    progress: Progress,
    references: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The task's claim precision over every caption of its items (media [(path, image|video)]), None when the
    column is off. ``references``: each item's reference caption (evidence: reference)."""
    from caprl_kit.rewards.faithfulness import Evidence, FaithfulnessScorer

    if cfg.faithfulness is None:
        return None
    caps, evidence, items = [], [], []
    for path, kind in dict.fromkeys(media):
        for caption in captions.get(path) or []:
            caps.append(caption)
            items.append(path)
            evidence.append(
                Evidence(
                    reference=(references or {}).get(path),
                    image=path if kind == "image" else None,
                    video=path if kind == "video" else None,
                )
            )
    stage = f"{task} faithfulness"
    progress.start(stage, total=len(caps))
    details = FaithfulnessScorer(cfg.faithfulness).score(caps, evidence).details if caps else []
    progress.advance(stage, items=len(caps))
    progress.finish(stage)
    return summarize_claims(details, items)


def summarize_claims(details: list[dict[str, Any]], items: list[str]) -> dict[str, Any]:
    """A task's faithfulness from its captions' details: the mean claim precision over the captions with a verified
    claim, the hallucinated-claim rate (unsupported / verified claims, over all of them), the unknown rate, the
    cost per caption, and the first unsupported claims.

    >>> d = [{"claim_precision": 1.0, "n_claims": 2, "n_supported": 2, "n_unsupported": 0, "n_unknown": 0,
    ...       "unsupported_claims": [], "faithfulness_requests": 2, "faithfulness_tokens": 10,
    ...       "faithfulness_seconds": 0.5},
    ...      {"claim_precision": 0.5, "n_claims": 3, "n_supported": 1, "n_unsupported": 1, "n_unknown": 1,
    ...       "unsupported_claims": ["a blue star"], "faithfulness_requests": 3, "faithfulness_tokens": 20,
    ...       "faithfulness_seconds": 0.5}]
    >>> s = summarize_claims(d, ["a.png", "b.png"])
    >>> s["claim_precision"], s["hallucinated_claim_rate"], s["unknown_rate"], s["unsupported_examples"]
    (0.75, 0.25, 0.2, [{'item': 'b.png', 'claim': 'a blue star'}])
    """
    scored = [d["claim_precision"] for d in details if d["claim_precision"] is not None]
    supported = sum(d["n_supported"] for d in details)
    unsupported = sum(d["n_unsupported"] for d in details)
    claims = sum(d["n_claims"] for d in details)
    n = len(details)
    return {
        "claim_precision": sum(scored) / len(scored) if scored else None,
        "hallucinated_claim_rate": unsupported / (supported + unsupported) if supported + unsupported else None,
        "unknown_rate": sum(d["n_unknown"] for d in details) / claims if claims else None,
        "n_captions": n,
        "n_unverified_captions": n - len(scored),
        "claims_per_caption": claims / n if n else 0.0,
        "requests_per_caption": sum(d["faithfulness_requests"] for d in details) / n if n else 0.0,
        "tokens_per_caption": sum(d["faithfulness_tokens"] for d in details) / n if n else 0.0,
        "seconds_per_caption": sum(d["faithfulness_seconds"] for d in details) / n if n else 0.0,
        "unsupported_examples": [
            {"item": item, "claim": c} for d, item in zip(details, items) for c in d["unsupported_claims"]
        ][:EXAMPLES],
    }
