"""How the embedded trainer's policy sees a video: its sampled frames as images, each after its timestamp text.

TRL 1.16's GRPOTrainer hands the policy image inputs only: it collects ``image`` parts and the ``images`` column, and
its forward pass for the log-probabilities takes ``pixel_values`` / ``image_grid_thw`` but no
``pixel_values_videos`` / ``video_grid_thw``. So a video row reaches the policy as the frames ``media.*`` samples
(``caprl_kit.io.media.load_video``), each image preceded by ``<t seconds>``, the text Qwen3-VL's processor puts before
each of a video's temporal patches:

    <0.5 seconds><image><1.5 seconds><image>...<prompt text>

The warm start (``sft.py``), the GRPO rollouts (``trl_grpo.py``) and checkpoint selection (``trl_callbacks.py``) all
build the prompt here, so the policy is trained and selected on one view of the video.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from caprl_kit import chat
from caprl_kit.errors import CaprlError
from caprl_kit.train.config import TrainMediaConfig

#: the text before each frame: when it was shown, as Qwen3-VL's video prompts say it
FRAME_STAMP = "<{:.1f} seconds>"


def frame_parts(frames: Sequence[Any], timestamps: Sequence[float], *, payload: bool = True) -> list[chat.Part]:
    """``<t seconds>`` then the frame, for every frame; ``payload=False`` leaves the image parts empty (TRL fills
    them from the ``images`` column in order)."""
    parts: list[chat.Part] = []
    for frame, t in zip(frames, timestamps, strict=True):
        parts.append({"type": "text", "text": FRAME_STAMP.format(t)})
        parts.append({"type": "image", "image": frame} if payload else {"type": "image"})
    return parts


def timestamped(
    messages: Sequence[chat.Message], frames: Sequence[Any], timestamps: Sequence[float], *, payload: bool = True
) -> list[chat.Message]:
    """Text messages with a ``<video>`` placeholder -> the timestamped frames where the placeholder was, then the
    rest of the text; without a placeholder the frames open the first user turn (Qwen-VL's order)."""
    tag = chat.PLACEHOLDERS["video"]
    parts = frame_parts(frames, timestamps, payload=payload)
    has_tag = any(isinstance(m["content"], str) and tag in m["content"] for m in messages)
    out, placed = [], False
    for m in messages:
        text = m["content"]
        if not isinstance(text, str):
            raise CaprlError(f"a video row's prompt message must be text with a {tag} placeholder, got {text!r:.80}")
        if not placed and (tag in text if has_tag else m["role"] == "user"):
            rest = text.replace(tag, "").strip()
            out.append(chat.message(m["role"], parts + ([{"type": "text", "text": rest}] if rest else [])))
            placed = True
        else:
            out.append(chat.message(m["role"], text))
    return out


class FrameSampler:
    """A video path -> (frames, timestamps) by ``media.*``, the most recent videos kept up to ``cache_bytes`` of
    frames: TRL reads a prompt once per completion of its group and the warm start every epoch, and each video is
    decoded once while it stays in the cache."""

    def __init__(self, media: TrainMediaConfig, cache_bytes: int = 1 << 30):
        self.media, self.cache_bytes = media, cache_bytes
        self._done: OrderedDict[str, tuple[list[Any], list[float]]] = OrderedDict()
        self._bytes = 0

    def __call__(self, path: Any) -> tuple[list[Any], list[float]]:
        from caprl_kit.io.media import load_video

        key = path["video"] if isinstance(path, dict) else path  # verl's {"video": path, ...} form
        if not isinstance(key, str):
            raise CaprlError(f"a video row's video must be a path, got {type(key).__name__}")
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        m = self.media
        clip = load_video(
            key,
            fps=m.video_fps,
            min_frames=m.video_min_frames,
            max_frames=m.video_max_frames,
            max_pixels=m.video_max_pixels,
        )
        got = (clip.frames, [float(t) for t in clip.timestamps])
        self._done[key] = got
        self._bytes += _size(got[0])
        while self._bytes > self.cache_bytes and len(self._done) > 1:
            self._bytes -= _size(self._done.popitem(last=False)[1][0])
        return got

    def messages(self, prompt: Sequence[chat.Message], videos: Any) -> list[chat.Message]:
        """A video row's prompt with its (one) video's timestamped frames in it (image parts filled)."""
        frames, timestamps = self(one_video(videos))
        return timestamped(prompt, frames, timestamps)


def _size(frames: list[Any]) -> int:
    return sum(f.width * f.height * 3 for f in frames)


def one_video(videos: Any, where: str = "a video row") -> Any:
    """The one video of a row's ``videos`` list (the layout caprl curate and CapRL-Video-QA-20K write)."""
    if hasattr(videos, "tolist"):
        videos = videos.tolist()
    if isinstance(videos, (str, dict)):
        return videos
    if not isinstance(videos, (list, tuple)) or len(videos) != 1:
        n = len(videos) if isinstance(videos, (list, tuple)) else type(videos).__name__
        raise CaprlError(f"{where} has {n} videos; trainer: trl trains on rows with one video each")
    return videos[0]
