"""The video reward recipes name the timestamp-format version they follow (v2, the shipped server's), and the
official server's (legacy) is one key away: ``timestamp_format.version=legacy`` on the shipped video server recipe
serves the legacy scores over HTTP (127.0.0.1)."""

from __future__ import annotations

import httpx
import pytest
from uvicorn_thread import serve

from caprl_kit.config import load_config
from caprl_kit.rewards.server_app import create_app

VIDEO_SERVER = "serve_reward/qa_video_qwen3_4b"
#: the video training recipes: their timestamp term comes from VIDEO_SERVER
VIDEO_TRAINING = ["train/caprlpp_video_qwen3vl4b_verl", "train/video_qwen3vl4b_verl", "train/s2d_boot_qwen3vl4b_verl"]
QUESTION = "What color is the circle?\n   - A) red\n   - B) blue"
# (caption, v2, legacy): one stamp; two out of order; an invalid stamp and a valid one (docs/rewards.md)
CAPTIONS = [("[00:03] A red circle.", 1.0, 0.7), ("[00:10] A red circle. [00:02] It stays.", 0.5, 0.55),
            ("[00:75] A red circle. [00:02] It stays.", 0.75, 0.35)]


def served_format_rewards(*overrides: str) -> list[float]:
    cfg = load_config(VIDEO_SERVER, ["qa.answerer.name=lexical", "~qa.answerer.model", "~qa.answerer.vllm",
                                     *overrides])
    body = {"prompts": [[c, [[QUESTION, "A"]]] for c, _, _ in CAPTIONS], "query": [], "labels": []}
    with serve(create_app(cfg)) as url:
        return httpx.post(f"{url}/get_reward", json=body).json()["format_rewards"]


def test_the_shipped_video_server_scores_v2_and_one_key_gives_the_official_legacy() -> None:
    assert load_config(VIDEO_SERVER).timestamp_format.version == "v2"
    assert served_format_rewards() == pytest.approx([v2 for _, v2, _ in CAPTIONS])
    assert served_format_rewards("timestamp_format.version=legacy") == pytest.approx([lg for _, _, lg in CAPTIONS])


@pytest.mark.parametrize("name", VIDEO_TRAINING)
def test_each_video_training_recipe_says_which_version_it_follows(name: str, repo) -> None:
    text = (repo / "pipelines" / f"{name}.yaml").read_text()
    assert VIDEO_SERVER in text and "v2" in text and "timestamp_format.version=legacy" in text, name
