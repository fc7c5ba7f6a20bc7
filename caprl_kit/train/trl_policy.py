"""The policy as the TRL trainers hold it: its processor (image area capped), its weights (the vision tower frozen
when asked) and an atomic save of both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caprl_kit.backends import loading
from caprl_kit.log import get_logger
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)


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


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (and merger); returns how many parameters were frozen."""
    n = 0
    for name, p in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual") or ".vision_tower" in name:
            p.requires_grad_(False)
            n += p.numel()
    return n


def save_atomically(target: Path, *parts: Any) -> None:
    """``save_pretrained`` every part (model, processor) into ``target`` under a temporary name, then swap it in:
    a killed run never leaves a half-written directory that a rerun would load."""
    from caprl_kit.io.fs import staged_dir

    with staged_dir(target) as tmp:
        for part in parts:
            part.save_pretrained(tmp)
