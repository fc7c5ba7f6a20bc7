"""The embedded trainer: TRL's GRPOTrainer on a Qwen-VL captioner with the CapRL reward (one machine, CPU or one
GPU). Images only: TRL's GRPOTrainer has no video inputs — video training goes through ``trainer: verl``.

Data: the curated Parquet/JSONL as is (prompt messages with the ``<image>`` placeholder, ``images`` paths,
``reward_model.ground_truth``). Reward: ``CaprlReward`` (QA accuracy through the configured answerer + length).
Outputs in OUTPUT/: ``checkpoint-N/`` (resumable), ``metrics.jsonl``, TensorBoard logs, ``final/`` (model +
processor, loadable by ``caprl annotate``/``caprl eval``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from caprl_kit.commands import NullProgress, Progress, RunReport
from caprl_kit.log import get_logger
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


def load_rl_dataset(files: list[str], image_key: str = "images") -> Any:
    """Curated rows -> TRL's multimodal GRPO columns: ``prompt`` (messages without the ``<image>`` placeholder,
    TRL inserts the image part itself), ``images`` (decoded lazily by datasets), plus every other column."""
    import datasets

    kind = "parquet" if all(f.endswith(".parquet") for f in files) else "json"
    ds = datasets.load_dataset(kind, data_files=files, split="train")

    def to_trl(row: dict[str, Any]) -> dict[str, Any]:
        msgs = [{"role": m["role"], "content": m["content"].replace("<image>", "").strip()} for m in row["prompt"]]
        return {"prompt": msgs, "images": row[image_key]}

    drop = [c for c in ("image",) if c in ds.column_names]
    ds = ds.map(to_trl, remove_columns=drop)
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (and merger); returns how many parameters were frozen."""
    n = 0
    for name, p in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual") or ".vision_tower" in name:
            p.requires_grad_(False)
            n += p.numel()
    return n


class MetricsCallback:
    """Writes every log line (TRL's rewards/kl/loss + our per-term reward details) to metrics.jsonl."""

    def __init__(self, path: Path, reward: CaprlReward, progress: Progress, total: int):
        self.path, self.reward, self.progress, self.total = path, reward, progress, total

    def as_trainer_callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):  # noqa: N802
                record = {"step": state.global_step, **(logs or {})}
                details = outer.reward.last_details
                for key in ("qa_reward", "length_reward", "cap_tokens", "format_reward"):
                    vals = [d[key] for d in details if key in d]
                    if vals:
                        record[f"reward_detail/{key}"] = sum(vals) / len(vals)
                correct = [c for d in details for c in d.get("correct", [])]
                if correct:
                    record["reward_detail/question_accuracy"] = sum(correct) / len(correct)
                with outer.path.open("a") as fh:
                    fh.write(json.dumps(record, default=float) + "\n")

            def on_step_end(self, args, state, control, **kw):  # noqa: N802
                outer.progress.advance("grpo", items=1)

        return _CB()


def train_grpo(cfg: TrainConfig, *, overwrite: bool = False, progress: Progress | None = None,
               policy: str | None = None) -> RunReport:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    progress = progress or NullProgress()
    out = Path(str(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    a, t = cfg.algorithm, cfg.trl
    policy = policy or cfg.policy
    processor = AutoProcessor.from_pretrained(policy)
    processor.image_processor.max_pixels = t.max_pixels
    model = AutoModelForImageTextToText.from_pretrained(policy, dtype=torch.float32 if not torch.cuda.is_available()
                                                        else torch.bfloat16)
    if a.freeze_vision_tower:
        log.info("froze %d vision-tower parameters", freeze_vision(model))
    vocab = processor.tokenizer.get_vocab()
    suppress = [vocab[x] for x in VISION_TOKENS if x in vocab]
    reward = CaprlReward(cfg.reward, tokenizer=processor.tokenizer)
    train = load_rl_dataset(cfg.data.train_files, cfg.data.image_key)
    args = GRPOConfig(
        output_dir=str(out), num_generations=a.num_generations, beta=a.kl_coef, learning_rate=a.lr,
        lr_scheduler_type=a.lr_scheduler, warmup_ratio=a.warmup_ratio, num_train_epochs=a.epochs,
        max_steps=a.max_steps or -1, per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, max_completion_length=cfg.data.max_response_length,
        temperature=a.temperature, top_p=a.top_p, loss_type=t.loss_type, scale_rewards=t.scale_rewards,
        logging_steps=t.logging_steps, save_steps=a.save_steps, report_to=t.report_to, seed=a.seed,
        logging_dir=str(out / "tensorboard"), remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), generation_kwargs={"suppress_tokens": suppress},
        disable_tqdm=True,
    )
    steps = a.max_steps or 0
    progress.start("grpo", total=steps or None)
    metrics = MetricsCallback(out / "metrics.jsonl", reward, progress, steps)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=train,
                          processing_class=processor, callbacks=[metrics.as_trainer_callback()])
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the library logs; metrics go to metrics.jsonl and TensorBoard
    resume = t.resume and not overwrite and any(out.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    progress.finish("grpo")
    final = out / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    report = RunReport(command="train", output_dir=str(out), n_items=len(train), n_ok=len(train))
    report.metrics.update({"train_loss": float(result.training_loss), "steps": float(trainer.state.global_step)})
    report.outputs.update({"final": str(final), "metrics": str(out / "metrics.jsonl")})
    if resume:
        report.notes.append("resumed from the newest checkpoint in the output directory")
    return report
