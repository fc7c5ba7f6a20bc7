"""Supervised warm start: teach the captioner the caption format on (image, reference caption) pairs before RL —
real users warm-start too. A plain loop over the processor's chat template: loss on the caption tokens only. Video
pairs (``task: video``) show the policy the video as RL does: its ``media.*`` frames, each after its timestamp
(train/video_frames.py). The prompt is ``sft.prompt`` (by default caprl curate's default for the task)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from caprl_kit import chat
from caprl_kit.backends import loading
from caprl_kit.errors import CaprlError
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)


def train_sft(cfg: TrainConfig, progress: Progress | None = None) -> str:
    """Returns the path of the warm-started model (OUTPUT/sft); reuses it when already trained."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from caprl_kit.errors import MediaError
    from caprl_kit.io.media import load_image
    from caprl_kit.prompts import PROMPTS
    from caprl_kit.train.trl_policy import freeze_vision, save_atomically
    from caprl_kit.train.video_frames import FrameSampler, timestamped

    progress = progress or NullProgress()
    s = cfg.sft
    assert s is not None
    out = Path(str(cfg.output_dir)) / "sft"
    if (out / "config.json").is_file():
        log.info("reusing the warm-started model in %s", out)
        return str(out)
    video = cfg.task == "video"
    column = s.video_column if video else s.image_column
    frames = FrameSampler(cfg.media) if video else None
    instruction = PROMPTS.get(s.prompt or ("caprl_video_timestamped" if video else "caprl_image"))
    rows = []
    for f in s.data_files:  # relative image (video) paths resolve against their data file's folder
        kind = "parquet" if f.endswith(".parquet") else "json"
        for r in datasets.load_dataset(kind, data_files=[f], split="train").to_list():
            image = r[column]
            image = image[0] if isinstance(image, list) else image
            if isinstance(image, str) and "://" not in image and not Path(image).is_absolute():
                image = str(Path(f).parent / image)
            if isinstance(r.get(s.caption_column), str) and r[s.caption_column].strip():
                rows.append({**r, column: image})
    if not rows:
        raise CaprlError(f"no ({cfg.task}, {s.caption_column}) rows in {s.data_files}")
    skipped: dict[str, int] = {}
    processor = loading.load("processor", cfg.policy, AutoProcessor.from_pretrained, cfg.policy, key="policy")
    processor.tokenizer.padding_side = "right"
    model = loading.load(
        "weights",
        cfg.policy,
        AutoModelForImageTextToText.from_pretrained,
        cfg.policy,
        key="policy",
        dtype=torch.float32,
    )
    model.train()
    if s.freeze_vision_tower:
        log.info("SFT: froze %d vision-tower parameters", freeze_vision(model))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    torch.manual_seed(cfg.algorithm.seed)
    steps_per_epoch = -(-len(rows) // s.batch_size)
    total = s.max_steps or s.epochs * steps_per_epoch
    progress.start("sft", total=total)
    step = 0
    metrics = Path(str(cfg.output_dir)) / "sft_metrics.jsonl"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.algorithm.seed)
    while step < total:
        for idx in torch.randperm(len(rows), generator=g).split(s.batch_size):
            batch, images, prompts = [], [], []
            for i in idx.tolist():
                try:
                    if frames is not None:
                        shown, stamps = frames(rows[i][column])
                        user = [chat.message("user", "<video>\n" + instruction)]
                        prompts.append(timestamped(user, shown, stamps, payload=False))
                        images.append(shown)
                    else:
                        images.append([load_image(rows[i][column]).pixels])
                        prompts.append(chat.user_turn(instruction, images=[None]))
                except MediaError as exc:  # bad input is skipped with a count, never a crashed job
                    skipped[exc.kind] = skipped.get(exc.kind, 0) + 1
                    continue
                batch.append(rows[i])
            if not batch:
                continue
            heads = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
            texts = [h + r[s.caption_column] + processor.tokenizer.eos_token for h, r in zip(heads, batch)]
            flat = [im for ims in images for im in ims]
            enc = processor(text=texts, images=flat, return_tensors="pt", padding=True)
            # the prompt's tokens (vision tokens expanded) per row: the heads alone, in one call
            head_lens = processor(text=heads, images=flat, return_tensors="pt", padding=True)["attention_mask"].sum(1)
            labels = enc["input_ids"].clone()
            for i, n in enumerate(head_lens.tolist()):
                labels[i, :n] = -100
            labels[enc["attention_mask"] == 0] = -100
            loss = model(**enc, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            progress.advance("sft", items=1)
            if step % s.log_steps == 0 or step == total:
                with metrics.open("a") as fh:
                    fh.write(json.dumps({"step": step, "loss": loss.item(), "time_s": time.perf_counter() - t0}) + "\n")
            if step >= total:
                break
    progress.finish("sft")
    processor.tokenizer.padding_side = "left"
    save_atomically(out, model, processor)  # a killed run leaves no half-written model that a rerun would reuse
    log.info("SFT: %d steps, last loss %.3f", step, loss.item())
    if skipped:
        log.warning("SFT skipped unreadable %ss (counted per epoch): %s", cfg.task, skipped)
    return str(out)
