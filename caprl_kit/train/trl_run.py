"""One TRL run as every method (GRPO, DPO) makes it: the ``TrainingArguments`` they share, then ``fit``: progress,
``metrics.jsonl``, validation selection into ``best/`` when asked, resume from the newest checkpoint, ``final/`` and
the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.progress import Progress, RunReport
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.trl_callbacks import MetricsCallback, ValidationCallback


def shared_args(cfg: TrainConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` keys every method sets alike: schedule (``algorithm.*``), logging and checkpoints
    (``trl.*``, OUTPUT/tensorboard), the device (bf16 on a GPU, else the CPU)."""
    import torch

    a, t, out = cfg.algorithm, cfg.trl, Path(str(cfg.output_dir))
    return dict(
        output_dir=str(out),
        learning_rate=a.lr,
        lr_scheduler_type=a.lr_scheduler,
        warmup_ratio=a.warmup_ratio,
        num_train_epochs=a.epochs,
        max_steps=a.max_steps or -1,
        logging_steps=t.logging_steps,
        save_steps=a.save_steps,
        report_to=t.report_to,
        seed=a.seed,
        logging_dir=str(out / "tensorboard"),
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        disable_tqdm=True,
    )


def fit(
    cfg: TrainConfig,
    trainer_class: Any,
    args: Any,
    *,
    model: Any,
    processor: Any,
    train: Any,
    policy: str,
    progress: Progress,
    stage: str,
    reward: CaprlReward | None = None,
    **trainer_kwargs: Any,
) -> RunReport:
    """Train ``model`` on ``train`` with ``trainer_class`` (TRL's GRPOTrainer or DPOTrainer) and ``args``: progress
    under ``stage``, every log line into metrics.jsonl, validation selection when ``data.val_files`` and
    ``trl.select_on_val``, resumed from the newest checkpoint in OUTPUT when ``trl.resume``; then ``finish``."""
    from transformers import PrinterCallback

    a, t, out = cfg.algorithm, cfg.trl, Path(str(cfg.output_dir))
    progress.start(stage, total=a.max_steps or None)
    metrics = MetricsCallback(out / "metrics.jsonl", reward, progress, a.max_steps or 0, stage=stage)
    callbacks = [metrics.as_trainer_callback()]
    validation = None
    if cfg.data.val_files and t.select_on_val:
        validation = ValidationCallback(cfg, processor, out)
        callbacks.append(validation.as_trainer_callback(out / "metrics.jsonl", a.eval_steps))
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)  # the library logs; metrics go to metrics.jsonl and TensorBoard
    resume = t.resume and any(out.glob("checkpoint-*"))  # --overwrite already emptied OUTPUT (pipeline.run)
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    progress.finish(stage)
    return finish(
        trainer, result, processor, out, n_items=len(train), policy=policy, validation=validation, resumed=resume
    )


def load_files(files: list[str], what: str) -> Any:
    """``files`` (all Parquet, else JSON/JSONL) as one ``datasets.Dataset``; a file datasets cannot read is one
    message naming ``what`` they hold and the reader's own error."""
    import datasets

    kind = "parquet" if all(f.endswith(".parquet") for f in files) else "json"
    try:
        return datasets.load_dataset(kind, data_files=files, split="train")
    except Exception as exc:  # datasets wraps reader errors in its own types
        cause = exc.__cause__ or exc
        raise CaprlError(
            f"could not read {what} {', '.join(files)}: {type(cause).__name__}: {str(cause)[:300]}"
        ) from exc


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
        if validation.cfg.trl.select_on != "qa_accuracy":
            report.metrics["best_val_score"] = validation.best["val_score"]
    if resumed:
        report.notes.append("resumed from the newest checkpoint in the output directory")
    alarms = validation.audit.alarms(upto=trainer.state.global_step) if validation is not None else {}
    if alarms:
        first, reason = next(iter(alarms.items()))
        report.notes.append(
            f"reward-hacking alarm at step(s) {', '.join(map(str, alarms))}: at step {first}, {reason} "
            "(monitor/hacking_alarm in metrics.jsonl; docs/hacking.md)"
        )
    return report
