"""What the TRL trainer's validation watches beside QA accuracy (``ValidationCallback``): the validation captions'
utility with each cut at 256 tokens of the policy's tokenizer (``val/utility@256``) and their mean length
(``val/caption_tokens``), their claim precision with ``trl.val_faithfulness`` (``val/claim_precision``), and the
reward-hacking alarm (``trl.hacking_alarm``, GRPO): ``monitor/hacking_alarm`` 0/1 with ``monitor/hacking_reason``,
decided by ``caprl_kit.hacking`` over the run's validation history in metrics.jsonl and logged as a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.hacking import (
    ALARM,
    ALARM_REWARD,
    REASON,
    VAL_CUT,
    hacking_alarm,
    raised_alarms,
    read_records,
    validation_points,
)
from caprl_kit.length_cuts import CaptionCutter, cut_scores
from caprl_kit.log import get_logger
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)


class ValidationAudit:
    """The extra validation metrics and the alarm of one TRL run (``rows``/``media``: the validation rows and each
    one's image or video, in the order the captions come)."""

    def __init__(self, cfg: TrainConfig, processor: Any, rows: list[dict[str, Any]], media: list[Any], metrics: Path):
        self.cutter = CaptionCutter(getattr(processor, "tokenizer", processor), cfg.policy)
        self.alarm = cfg.trl.hacking_alarm if cfg.method == "grpo" else None  # DPO logs no training reward
        self.metrics_path = metrics
        self.faithfulness, self.evidence = None, []
        if cfg.trl.val_faithfulness:
            from caprl_kit.rewards.faithfulness import FaithfulnessScorer

            self.evidence = val_evidence(cfg, rows, media)
            self.faithfulness = FaithfulnessScorer(cfg.reward.faithfulness)

    def extend(self, record: dict[str, Any], captions: list[str], qas: list[Any], scores: list[float], scorer: Any):
        """Add to a validation ``record`` (its step and ``val/qa_accuracy`` set; ``scores``: each caption's QA
        score) the utility@256 (the captions longer than 256 tokens cut and scored again by ``scorer``), the mean
        length, the claim precision when on, and the alarm's verdict."""
        n = max(1, len(captions))
        (cut,), lengths = cut_scores(scorer, captions, qas, scores, [VAL_CUT], self.cutter)
        record[f"val/utility@{VAL_CUT}"] = sum(cut) / n
        record["val/caption_tokens"] = sum(lengths) / n
        if self.faithfulness is not None:
            details = self.faithfulness.score(captions, self.evidence).details
            precisions = [d["claim_precision"] for d in details if d["claim_precision"] is not None]
            record["val/claim_precision"] = sum(precisions) / len(precisions) if precisions else None
        if self.alarm is None:
            return
        step = record["step"]
        history = validation_points([*read_records(self.metrics_path), record], upto=step)
        raised, reason = hacking_alarm(history, self.alarm)
        if history and history[-1].reward is not None:
            record[ALARM_REWARD] = history[-1].reward
        record[ALARM] = int(raised)
        if raised:
            record[REASON] = reason
            log.warning("step %d: reward-hacking alarm: %s", step, reason)

    def alarms(self, upto: int | None = None) -> dict[int, str]:
        """The steps whose validation raised the alarm in this run's metrics.jsonl, with the reasons."""
        return raised_alarms(read_records(self.metrics_path), upto)


def val_evidence(cfg: TrainConfig, rows: list[dict[str, Any]], media: list[Any]) -> list[Any]:
    """What each validation caption's claims are checked against (``reward.faithfulness.verifier.evidence``): the
    row's reference caption (every row must hold one: refused before training otherwise) or its image or video."""
    from caprl_kit.rewards.faithfulness import Evidence

    verifier = cfg.reward.faithfulness.verifier
    if verifier.evidence == "media":
        video = cfg.task == "video"
        return [Evidence(image=None if video else m, video=m if video else None) for m in media]
    column = verifier.reference_column
    missing = [i for i, r in enumerate(rows) if not str(r.get(column) or "").strip()]
    if missing:
        raise CaprlError(
            f"trl.val_faithfulness: {len(missing)} of {len(rows)} data.val_files row(s) have no reference caption in "
            f"'{column}' (reward.faithfulness.verifier.reference_column; e.g. row {missing[0]}): name the column that "
            "holds it, or check against the media (verifier.evidence: media with a VLM verifier)"
        )
    return [Evidence(reference=str(r[column])) for r in rows]
