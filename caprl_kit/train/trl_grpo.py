"""The embedded trainer: TRL's GRPOTrainer on a Qwen-VL captioner with the CapRL reward (one machine, CPU or one
GPU). Images only: TRL's GRPOTrainer has no video inputs — video training goes through ``trainer: verl``.

Data: the curated Parquet/JSONL as is (prompt messages with the ``<image>`` placeholder, ``images`` paths,
``reward_model.ground_truth``). Reward: ``CaprlReward`` (QA accuracy through the configured answerer + length).
Outputs in OUTPUT/: ``checkpoint-N/`` (resumable), ``metrics.jsonl``, TensorBoard logs, ``final/`` (model +
processor, loadable by ``caprl annotate``/``caprl eval``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caprl_kit.backends import loading
from caprl_kit.backends.transformers_local import VISION_TOKENS
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.rows import read_rows
from caprl_kit.log import get_logger
from caprl_kit.monitors import FLAG_METRIC, TEXT_FLAGS
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.official import normalize_rl_row

log = get_logger(__name__)


def load_rl_dataset(files: list[str], image_key: str = "images", media_root: str | None = None) -> Any:
    """Curated rows (or CapRL-QA-75K's, ``train/official.py``) -> TRL's multimodal GRPO columns: ``prompt``
    (messages without the ``<image>`` placeholder, TRL inserts the image part itself), ``images`` (decoded lazily by
    datasets), plus every other column."""
    import datasets

    kind = "parquet" if all(f.endswith(".parquet") for f in files) else "json"
    try:
        ds = datasets.load_dataset(kind, data_files=files, split="train")
    except Exception as exc:  # datasets wraps reader errors in its own types
        cause = exc.__cause__ or exc
        raise CaprlError(
            f"could not read the training data {', '.join(files)}: {type(cause).__name__}: {str(cause)[:300]}"
        ) from exc

    def to_trl(row: dict[str, Any]) -> dict[str, Any]:
        msgs = [{"role": m["role"], "content": m["content"].replace("<image>", "").strip()} for m in row["prompt"]]
        return {"prompt": msgs, "images": normalize_rl_row(dict(row), image_key, media_root=media_root)[image_key]}

    drop = [c for c in ("image",) if c in ds.column_names]
    ds = ds.map(to_trl, remove_columns=drop)
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))


def check_dataset(cfg: TrainConfig) -> list[str]:
    """Dry-run check for ``trainer: trl``: load the training (and validation) rows the way the trainer does and
    render the first prompt with the policy's processor, image included; skipped when the policy is not local."""
    if not Path(cfg.policy).is_dir():
        return [
            f"trl: SKIPPED the dataset check: the policy {cfg.policy} is not a local directory "
            "(its processor is needed to render the prompts)"
        ]
    missing = [f for f in cfg.data.train_files + cfg.data.val_files if not Path(f).is_file()]
    if missing:
        return [f"trl: SKIPPED the dataset check: missing data file(s) {', '.join(missing)}"]
    from transformers import AutoProcessor

    from caprl_kit.train.checks import check_data, check_policy, check_sft_data

    check_data(cfg, sft=False)
    check_policy(cfg.policy)
    sft_lines = []
    if cfg.sft is not None:
        missing_sft = [f for f in cfg.sft.data_files if not Path(f).is_file()]
        if missing_sft:
            sft_lines.append(f"trl: SKIPPED the warm-start data check: missing file(s) {', '.join(missing_sft)}")
        else:
            check_sft_data(cfg)
    processor = loading.load("processor", cfg.policy, AutoProcessor.from_pretrained, cfg.policy, key="policy")
    ds = load_rl_dataset(cfg.data.train_files, cfg.data.image_key, cfg.data.media_root)
    row = ds[0]
    messages = [
        {
            "role": m["role"],
            "content": (
                [{"type": "image"}, {"type": "text", "text": m["content"]}] if m["role"] == "user" else m["content"]
            ),
        }
        for m in row["prompt"]
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=row["images"][:1], return_tensors="pt")
    n_tokens = int(enc["input_ids"].shape[1])
    if n_tokens > cfg.data.max_prompt_length:
        raise ConfigError(
            [
                ConfigIssue(
                    "data.max_prompt_length",
                    f"the first prompt has {n_tokens} tokens (image included), over {cfg.data.max_prompt_length}",
                    "raise it or lower trl.max_pixels",
                )
            ]
        )
    lines = [
        f"trl: loaded {len(ds)} training rows; the first prompt renders to {n_tokens} tokens with the policy's "
        "processor"
    ]
    if cfg.data.val_files:
        lines.append(f"trl: {len(read_val_rows(cfg))} validation items")
    return lines + sft_lines


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (and merger); returns how many parameters were frozen."""
    n = 0
    for name, p in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual") or ".vision_tower" in name:
            p.requires_grad_(False)
            n += p.numel()
    return n


class ValidationCallback:
    """Checkpoint selection on the validation split: every ``eval_steps`` (and before the first step) the policy
    captions the validation images greedily, the QA scorer (all questions once) scores the captions, the accuracy
    goes to metrics.jsonl, and the best model so far is saved to OUTPUT/best (model + processor, atomically)."""

    def __init__(self, cfg: TrainConfig, processor: Any, out: Path):
        from caprl_kit.rewards.base import decode_ground_truth
        from caprl_kit.rewards.qa import qa_scorer

        self.cfg, self.processor, self.out = cfg, processor, out
        rows = read_val_rows(cfg)
        self.images = [r[cfg.data.image_key][0] for r in rows]
        self.qas = [decode_ground_truth(r["reward_model"]["ground_truth"]) for r in rows]
        self.prompts = [r[cfg.data.prompt_key] for r in rows]
        self.scorer = qa_scorer(cfg.reward.qa.model_copy(update={"mode": "all_qa"}))  # a service keeps its own mode
        self.state_path = out / "best.json"
        self.best = json.loads(self.state_path.read_text()) if self.state_path.is_file() else None

    def captions(self, model: Any) -> list[str]:
        """Greedy captions of the validation images by the in-memory policy, through the transformers back end;
        an image that fails to load gets an empty caption (it scores 0) instead of stopping the training."""
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
        requests = [Request(messages=_with_image(p, im)) for p, im in zip(self.prompts, self.images)]
        was_training = model.training
        model.eval()
        try:
            responses = backend.generate(requests)
        finally:
            model.train(was_training)
        return [r.texts[0] if r.ok else "" for r in responses]

    def evaluate(self, model: Any, step: int) -> dict[str, Any]:
        caps = self.captions(model)
        acc = sum(self.scorer.score(caps, self.qas).scores) / max(1, len(caps))
        record = {"step": step, "val/qa_accuracy": acc, "val/sample_caption": caps[0] if caps else ""}
        if self.best is None or acc > self.best["val_qa_accuracy"]:
            self.best = {"step": step, "val_qa_accuracy": acc}
            save_atomically(self.out / "best", model, self.processor)
            self.state_path.write_text(json.dumps(self.best))
            record["val/best"] = True
        log.info(
            "step %d: validation QA accuracy %.3f (best %.3f at step %d)",
            step,
            acc,
            self.best["val_qa_accuracy"],
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


def save_atomically(target: Path, *parts: Any) -> None:
    """``save_pretrained`` every part (model, processor) into ``target`` under a temporary name, then swap it in:
    a killed run never leaves a half-written directory that a rerun would load."""
    from caprl_kit.io.fs import staged_dir

    with staged_dir(target) as tmp:
        for part in parts:
            part.save_pretrained(tmp)


def _with_image(messages: Any, image: str) -> list[dict[str, Any]]:
    """Curated prompt messages (``<image>`` placeholder in the text) -> typed parts with the image source."""
    out = []
    for m in list(messages):
        text = m["content"]
        if "<image>" in text:
            parts = [{"type": "image", "image": image}] + (
                [{"type": "text", "text": t}] if (t := text.replace("<image>", "").strip()) else []
            )
            out.append({"role": m["role"], "content": parts})
        else:
            out.append({"role": m["role"], "content": text})
    return out


def read_val_rows(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The validation rows (curated Parquet/JSONL), capped at ``trl.val_max_items``."""
    rows = [r for f in cfg.data.val_files for r in read_rows(f, key="data.val_files")]
    rows = rows[: cfg.trl.val_max_items] if cfg.trl.val_max_items else rows
    return [normalize_rl_row(r, cfg.data.image_key, media_root=cfg.data.media_root) for r in rows]


#: reward details (per caption) -> their logged means: the terms, the reward service's latency and captions/s when
#: scored through caprl serve-reward (reward.qa.service), the caption monitors' flags (truncation: TRL's clipped_ratio)
PER_CAPTION = {
    **{k: f"reward_detail/{k}" for k in ("qa_reward", "length_reward", "cap_tokens", "format_reward")},
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


def load_processor(cfg: TrainConfig, policy: str) -> Any:
    """The policy's processor as the trainers use it: image area capped at ``trl.max_pixels``."""
    from transformers import AutoProcessor

    processor = loading.load("processor", policy, AutoProcessor.from_pretrained, policy, key="policy")
    processor.image_processor.max_pixels = cfg.trl.max_pixels
    return processor


def load_policy(cfg: TrainConfig, policy: str) -> tuple[Any, Any]:
    """The policy's processor (``load_processor``) and weights (bf16 on a GPU, fp32 on the CPU), the vision tower
    frozen when ``algorithm.freeze_vision_tower``."""
    import torch
    from transformers import AutoModelForImageTextToText

    processor = load_processor(cfg, policy)
    model = loading.load(
        "weights",
        policy,
        AutoModelForImageTextToText.from_pretrained,
        policy,
        key="policy",
        dtype=torch.float32 if not torch.cuda.is_available() else torch.bfloat16,
    )
    if cfg.algorithm.freeze_vision_tower:
        log.info("froze %d vision-tower parameters", freeze_vision(model))
    return processor, model


def grpo_args(cfg: TrainConfig, suppress: Sequence[int] = ()) -> Any:
    """TRL's ``GRPOConfig`` for ``cfg``: ``algorithm.*`` where TRL has the same knob (kl_coef -> beta, entropy_coeff ->
    entropy_coef: the mean per-token entropy bonus, verl's with its default token-mean aggregation), ``trl.*`` for
    the rest. The verl-only keys without a TRL equivalent are refused when the config is validated
    (``TrainConfig._trl_ignores``)."""
    import torch
    from trl import GRPOConfig

    a, t, out = cfg.algorithm, cfg.trl, Path(str(cfg.output_dir))
    return GRPOConfig(
        output_dir=str(out),
        num_generations=a.num_generations,
        beta=a.kl_coef,
        learning_rate=a.lr,
        lr_scheduler_type=a.lr_scheduler,
        warmup_ratio=a.warmup_ratio,
        num_train_epochs=a.epochs,
        max_steps=a.max_steps or -1,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_completion_length=cfg.data.max_response_length,
        temperature=a.temperature,
        top_p=a.top_p,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        entropy_coef=a.entropy_coeff,
        logging_steps=t.logging_steps,
        save_steps=a.save_steps,
        report_to=t.report_to,
        seed=a.seed,
        logging_dir=str(out / "tensorboard"),
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        generation_kwargs={"suppress_tokens": list(suppress)},
        disable_tqdm=True,
    )


def train_grpo(cfg: TrainConfig, *, progress: Progress | None = None, policy: str | None = None) -> RunReport:
    from trl import GRPOTrainer

    progress = progress or NullProgress()
    out = Path(str(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    a, t = cfg.algorithm, cfg.trl
    policy = policy or cfg.policy
    processor, model = load_policy(cfg, policy)
    vocab = processor.tokenizer.get_vocab()
    suppress = [vocab[x] for x in VISION_TOKENS if x in vocab]  # the same tokens the transformers back end bans
    reward = CaprlReward(cfg.reward, tokenizer=processor.tokenizer)
    train = load_rl_dataset(cfg.data.train_files, cfg.data.image_key, cfg.data.media_root)
    args = grpo_args(cfg, suppress)
    steps = a.max_steps or 0
    progress.start("grpo", total=steps or None)
    metrics = MetricsCallback(out / "metrics.jsonl", reward, progress, steps)
    callbacks = [metrics.as_trainer_callback()]
    validation = None
    if cfg.data.val_files and t.select_on_val:
        validation = ValidationCallback(cfg, processor, out)
        callbacks.append(validation.as_trainer_callback(out / "metrics.jsonl", a.eval_steps))
    # CaprlReward returns list[float]; TRL's RewardFunc says list[float | None], and list is invariant
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],  # type: ignore[list-item]  # TRL types rewards list[float | None]; ours return list[float] (lists are invariant)
        args=args,
        train_dataset=train,
        processing_class=processor,
        callbacks=callbacks,
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the library logs; metrics go to metrics.jsonl and TensorBoard
    resume = t.resume and any(out.glob("checkpoint-*"))  # --overwrite already emptied OUTPUT (pipeline.run)
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    progress.finish("grpo")
    return finish(
        trainer, result, processor, out, n_items=len(train), policy=policy, validation=validation, resumed=resume
    )


def finish(
    trainer: Any,
    result: Any,
    processor: Any,
    out: Path,
    *,
    n_items: int,
    policy: str,
    validation: ValidationCallback | None,
    resumed: bool,
) -> RunReport:
    """After a TRL run (GRPO or DPO): ``final/`` (model + processor, saved under a hidden sibling name and swapped
    in: a run killed while saving leaves ``final/`` absent or the previous complete one) and the report (loss,
    steps, the best validation checkpoint)."""
    from caprl_kit.io.fs import staged_dir

    final = out / "final"
    with staged_dir(final) as tmp:
        trainer.save_model(str(tmp))
        processor.save_pretrained(str(tmp))
    report = RunReport(command="train", output_dir=str(out), n_items=n_items, n_ok=n_items)
    report.metrics.update({"train_loss": float(result.training_loss), "steps": float(trainer.state.global_step)})
    report.outputs.update({"final": str(final), "metrics": str(out / "metrics.jsonl"), "policy": str(policy)})
    if validation is not None and validation.best is not None:
        report.outputs["best"] = str(out / "best")
        report.metrics.update(
            {"best_val_qa_accuracy": validation.best["val_qa_accuracy"], "best_step": float(validation.best["step"])}
        )
    if resumed:
        report.notes.append("resumed from the newest checkpoint in the output directory")
    return report
