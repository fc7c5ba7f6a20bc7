"""What a TRL run records while it trains (GRPO and DPO alike): every log line into ``metrics.jsonl`` with the
reward's per-term details (``MetricsCallback``), and checkpoint selection on the validation split into ``best/``
(``ValidationCallback``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caprl_kit import chat
from caprl_kit.errors import MediaError
from caprl_kit.io.rows import read_rows
from caprl_kit.log import get_logger
from caprl_kit.monitors import FLAG_METRIC, TEXT_FLAGS
from caprl_kit.progress import Progress
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig, selection_weights
from caprl_kit.train.official import normalize_rl_row
from caprl_kit.train.trl_policy import save_atomically
from caprl_kit.train.val_audit import ValidationAudit
from caprl_kit.train.video_frames import FrameSampler, one_video

log = get_logger(__name__)


#: reward details (per caption) -> their logged means: the terms, the reward service's latency and captions/s when
#: scored through caprl serve-reward (reward.qa.service), the caption monitors' flags (truncation: TRL's clipped_ratio)
PER_CAPTION = {
    **{
        k: f"reward_detail/{k}"
        for k in ("qa_reward", "length_reward", "cap_tokens", "format_reward", "faithfulness_reward")
    },
    **{f"service_{k}": f"reward_service/{k}" for k in ("latency_s", "captions_per_s")},
    **{FLAG_METRIC.format(f): f"monitor/{f}" for f in TEXT_FLAGS},
}
#: reward details (per question) -> their logged shares: answered correctly; the cannot-answer option taken (the
#: caption did not hold the answer, by the answerer's own account)
PER_QUESTION = {"correct": "reward_detail/question_accuracy", "cannot_answer": "reward_detail/cannot_answer_rate"}


class MetricsCallback:
    """Writes every log line (TRL's rewards/kl/loss + our per-term reward details + the caption monitors' rates as
    ``monitor/<flag>`` + the reward service's latency and captions/s as ``reward_service/*`` when scored over HTTP)
    to metrics.jsonl."""

    def __init__(self, path: Path, reward: CaprlReward | None, progress: Progress, total: int, stage: str = "grpo"):
        self.path, self.reward, self.progress, self.total, self.stage = path, reward, progress, total, stage

    def as_trainer_callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                record = {"step": state.global_step, **(logs or {})}
                details = outer.reward.last_details if outer.reward is not None else []  # dpo: no reward calls
                for source, target in PER_CAPTION.items():  # means over the last batch's captions
                    vals = [d[source] for d in details if source in d]
                    if vals:
                        record[target] = sum(vals) / len(vals)
                for source, target in PER_QUESTION.items():  # means over every question asked of them
                    vals = [v for d in details for v in d.get(source, [])]
                    if vals:
                        record[target] = sum(vals) / len(vals)
                with outer.path.open("a") as fh:
                    fh.write(json.dumps(record, default=float) + "\n")

            def on_step_end(self, args, state, control, **kw):
                outer.progress.advance(outer.stage, items=1)

        return _CB()


class ValidationCallback:
    """Checkpoint selection on the validation split: every ``eval_steps`` (and before the first step) the policy
    captions the validation images (or videos, as timestamped frames: train/video_frames.py) greedily, the QA
    scorer (all questions once) scores the captions, the accuracy goes to metrics.jsonl, and the best model so far
    is saved to OUTPUT/best (model + processor, atomically): best by the accuracy, or with ``trl.select_on:
    qa_and_faithfulness`` by the reward's weighting of it and the claim precision (``val/score``)."""

    def __init__(self, cfg: TrainConfig, processor: Any, out: Path):
        from caprl_kit.rewards.base import decode_ground_truth
        from caprl_kit.rewards.qa import qa_scorer

        self.cfg, self.processor, self.out = cfg, processor, out
        rows = read_val_rows(cfg)
        self.video = cfg.task == "video"
        key = cfg.data.video_key if self.video else cfg.data.image_key
        self.media = [
            one_video(r[key], f"data.val_files row {i}") if self.video else r[key][0] for i, r in enumerate(rows)
        ]
        self.frames = FrameSampler(cfg.media) if self.video else None
        self.qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in rows]
        self.prompts = [r[cfg.data.prompt_key] for r in rows]
        self.audit = ValidationAudit(cfg, processor, rows, self.media, out / "metrics.jsonl")  # utility@256, alarm
        self.scorer = qa_scorer(cfg.reward.qa.model_copy(update={"mode": "all_qa"}))  # a service keeps its own mode
        self.state_path = out / "best.json"
        self.best = json.loads(self.state_path.read_text()) if self.state_path.is_file() else None
        if self.best is not None:  # a best.json written before trl.select_on was ranked by the accuracy
            self.best.setdefault("val_score", self.best["val_qa_accuracy"])

    def captions(self, model: Any) -> list[str]:
        """Greedy captions of the validation images by the in-memory policy, through the transformers back end;
        an image (or video) that fails to load gets an empty caption (it scores 0) instead of stopping the
        training."""
        from caprl_kit.backends.base import Request
        from caprl_kit.backends.config import BackendConfig
        from caprl_kit.backends.transformers_local import TransformersBackend

        backend = TransformersBackend(
            BackendConfig(
                name="transformers",
                batch_size=32,
                sampling={"n": 1, "temperature": 0.0, "max_tokens": self.cfg.data.max_response_length},
            ),
            model=model,
            processor=self.processor,
        )
        requests: dict[int, Request] = {}
        for i, (prompt, media) in enumerate(zip(self.prompts, self.media)):
            if self.frames is None:
                requests[i] = Request(messages=chat.with_media_parts(prompt, media))
                continue
            try:  # the frames are decoded here; an image is decoded by the back end (a failed response)
                requests[i] = Request(messages=self.frames.messages(prompt, media))
            except MediaError as exc:
                log.warning("validation: %s", exc)
        was_training = model.training
        model.eval()
        try:
            responses = dict(zip(requests, backend.generate(list(requests.values()))))
        finally:
            model.train(was_training)
        return [r.texts[0] if (r := responses.get(i)) is not None and r.ok else "" for i in range(len(self.media))]

    def evaluate(self, model: Any, step: int) -> dict[str, Any]:
        caps = self.captions(model)
        scores = self.scorer.score(caps, self.qas).scores
        acc = sum(scores) / max(1, len(caps))
        record = {"step": step, "val/qa_accuracy": acc, "val/sample_caption": caps[0] if caps else ""}
        self.audit.extend(record, caps, self.qas, scores, self.scorer)
        score = selection_score(self.cfg, record)
        if self.best is None or score > self.best["val_score"]:
            self.best = {"step": step, "val_qa_accuracy": acc, "val_score": score}
            save_atomically(self.out / "best", model, self.processor)
            self.state_path.write_text(json.dumps(self.best))
            record["val/best"] = True
        log.info(
            "step %d: validation QA accuracy %.3f%s (best %s %.3f at step %d)",
            step,
            acc,
            f", selection score {score:.3f}" if "val/score" in record else "",
            self.cfg.trl.select_on,
            self.best["val_score"],
            self.best["step"],
        )
        return record

    def as_trainer_callback(self, metrics_path: Path, every: int) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def _write(self, record):
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(record, default=float) + "\n")

            def on_train_begin(self, args, state, control, model=None, **kw):
                if state.global_step == 0 and outer.best is None:
                    self._write(outer.evaluate(model, 0))

            def on_step_end(self, args, state, control, model=None, **kw):
                if state.global_step % every == 0 or state.global_step == state.max_steps:
                    self._write(outer.evaluate(model, state.global_step))

        return _CB()


def selection_score(cfg: TrainConfig, record: dict[str, Any]) -> float:
    """What ``trl.select_on`` ranks a validation ``record`` by: its QA accuracy, or the reward's weighting of it and
    the claim precision (None, no caption with a claim, counts 0), then also set as the record's ``val/score``."""
    acc = float(record["val/qa_accuracy"])
    if cfg.trl.select_on == "qa_accuracy":
        return acc
    w_qa, w_faith = selection_weights(cfg)
    record["val/score"] = w_qa * acc + w_faith * float(record.get("val/claim_precision") or 0.0)
    return record["val/score"]


def read_val_rows(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The validation rows (curated Parquet/JSONL), capped at ``trl.val_max_items``."""
    rows = [r for f in cfg.data.val_files for r in read_rows(f, key="data.val_files")]
    rows = rows[: cfg.trl.val_max_items] if cfg.trl.val_max_items else rows
    return [normalize_rl_row(r, cfg.data.image_key, cfg.data.video_key, media_root=cfg.data.media_root) for r in rows]
