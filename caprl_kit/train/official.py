"""The official CapRL training data as published, read without conversion.

- ``internlm/CapRL-QA-75K`` (Parquet): one HF ``Image`` struct in ``image`` (``{bytes, path}``), not an ``images``
  list; choices written ``"A) text"``.
- ``internlm/CapRL-Video-QA-20K`` (JSONL): ``videos`` holds paths relative to the LLaVA-Video-178K root; choices
  written ``"A. Black"``.

``normalize_rl_row`` turns such a row into the layout verl's ``RLHFDataset`` and TRL read (an ``images`` list;
media paths resolved against ``data.media_root``); curated rows pass unchanged. Choice labels need nothing here:
every reader of ``reward_model.ground_truth`` goes through the strict MCQ validator, which takes "A)", "A." and
"(A)" alike. verl reads the rows through ``CaprlRLDataset`` (``train/verl_dataset.py``), TRL through
``trl_grpo.load_rl_dataset``.
"""

from __future__ import annotations

import posixpath
from typing import Any

SINGLE_IMAGE = "image"  #: CapRL-QA-75K's column: one image, not a list


def _under(root: str, path: Any) -> Any:
    if isinstance(path, dict):  # verl's {"video": path, ...} / {"image": path, ...} forms
        return {k: _under(root, v) if k in ("video", "image", "path") else v for k, v in path.items()}
    if not isinstance(path, str) or not path or "://" in path or path.startswith("/"):
        return path
    return posixpath.join(root, path)


def normalize_rl_row(
    row: dict[str, Any], image_key: str = "images", video_key: str = "videos", media_root: str | None = None
) -> dict[str, Any]:
    """In place (and returned): ``image`` -> ``images: [image]`` when the row has no ``image_key`` list; relative
    image/video paths joined to ``media_root``."""
    if row.get(image_key) is None and row.get(SINGLE_IMAGE) is not None:
        row[image_key] = [row.pop(SINGLE_IMAGE)]
    if media_root:
        for key in (image_key, video_key):
            if row.get(key):
                row[key] = [_under(media_root, m) for m in row[key]]
    return row
