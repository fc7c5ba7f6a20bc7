"""Shared fixtures: tiny real models (built once per session by the project's factory), generated images and
videos (good and broken), and the path of the separate vLLM environment."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from media_factory import make_image_bytes, make_video_bytes  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from caprl_kit.models.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"), seed=0)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images and a video, plus broken files, on disk."""
    d = tmp_path_factory.mktemp("media")
    for i, color in enumerate([(255, 0, 0), (0, 128, 255), (20, 200, 40)]):
        (d / f"img_{i}.png").write_bytes(make_image_bytes(color=color, size=(96 + 16 * i, 64)))
    (d / "clip.mp4").write_bytes(make_video_bytes(n_frames=30, fps=10))
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(make_image_bytes(fmt="JPEG", size=(200, 150))[:300])
    (d / "notimage.png").write_bytes(b"this is not an image at all" * 10)
    (d / "corrupt.mp4").write_bytes(make_video_bytes(n_frames=10)[:200] + b"\x00" * 500)
    return d
