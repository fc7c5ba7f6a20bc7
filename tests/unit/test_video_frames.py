"""How the embedded trainer shows a video to the policy: its sampled frames as images, each after its timestamp
text, where the prompt's <video> placeholder was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caprl_kit import chat
from caprl_kit.errors import CaprlError
from caprl_kit.synthetic_video import write_video_task
from caprl_kit.train.config import TrainMediaConfig
from caprl_kit.train.video_frames import FrameSampler, one_video, timestamped


def test_the_policy_sees_timestamped_frames_where_the_placeholder_was(tmp_path: Path) -> None:
    manifests = write_video_task(tmp_path, n_train=1, n_val=0, n_test=0, seed=0, size=56)
    path = str(tmp_path / "train" / json.loads(manifests["train"].read_text())["path"])
    sampler = FrameSampler(TrainMediaConfig(video_fps=1.0, video_min_frames=2, video_max_frames=4))
    frames, stamps = sampler(path)
    assert stamps == [0.5, 1.5, 2.5, 3.5] and sampler(path) == (frames, stamps)
    prompt = [chat.message("system", "sys"), chat.message("user", "<video>\nDescribe it.")]
    out = sampler.messages(prompt, [path])
    assert out[0] == prompt[0]
    parts = out[1]["content"]
    assert [p["text"] for p in parts[0:8:2]] == ["<0.5 seconds>", "<1.5 seconds>", "<2.5 seconds>", "<3.5 seconds>"]
    assert [p["image"] for p in parts[1:8:2]] == frames and parts[-1] == {"type": "text", "text": "Describe it."}
    empty = timestamped([chat.message("user", "Describe it.")], frames, stamps, payload=False)  # no placeholder
    assert empty[0]["content"][1] == {"type": "image"} and empty[0]["content"][-1]["text"] == "Describe it."
    with pytest.raises(CaprlError, match="row 7 has 2 videos; trainer: trl trains on rows with one video each"):
        one_video([path, path], "row 7")
