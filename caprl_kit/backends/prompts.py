"""Rendering a ``Request`` for a local model: decoded media plus the model's own chat template (with an assistant
prefill continued when the request has one). Shared by the in-process back ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from caprl_kit import chat
from caprl_kit.backends.base import Request
from caprl_kit.errors import MediaError
from caprl_kit.io.media import VideoClip, load_image, load_video


@dataclass
class Rendered:
    text: str
    images: list[Image.Image] = field(default_factory=list)
    videos: list[VideoClip] = field(default_factory=list)


def render_request(request: Request, template: Any, is_vlm: bool, model_id: str) -> Rendered:
    """Decode the request's media (paths/URLs/bytes are loaded; PIL images and clips pass through), replace them
    by typed placeholders and apply ``template.apply_chat_template``. Raises ``MediaError`` on bad media, or when a
    text-only model gets media."""
    out = Rendered(text="")

    def placeholder(part: chat.Part) -> list[chat.Part]:
        if part["type"] == "image":
            img = part["image"]
            out.images.append(img if isinstance(img, Image.Image) else load_image(img).pixels)
        else:
            clip = part["video"]
            out.videos.append(clip if isinstance(clip, VideoClip) else load_video(clip))
        return [{"type": part["type"]}]

    messages = chat.map_media(request.messages, placeholder)
    if (out.images or out.videos) and not is_vlm:
        raise MediaError("unsupported_media", model_id, "this model takes text only")
    if request.prefill is not None:
        messages.append(chat.message("assistant", request.prefill))
        out.text = template.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, continue_final_message=True
        )
    else:
        out.text = template.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return out
