"""verl's ``RLHFDataset`` reading the official CapRL layouts too (``train/official.py``): the composed verl command
sets ``data.custom_cls`` to this class, and ``+data.media_root`` when ``data.media_root`` is configured. Curated
rows are read exactly as ``RLHFDataset`` reads them."""

from __future__ import annotations

from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

from caprl_kit.train.official import normalize_rl_row


class CaprlRLDataset(RLHFDataset):
    def _build_messages(self, example: dict[str, Any], key: str) -> Any:
        normalize_rl_row(example, self.image_key, self.video_key, self.config.get("media_root"))
        return super()._build_messages(example, key)
