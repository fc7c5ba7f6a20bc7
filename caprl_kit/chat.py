"""The one chat-message model of the project, and every conversion of it.

A message is ``{"role": "system" | "user" | "assistant", "content": str | list[part]}`` (the OpenAI / Hugging Face
chat shape), a part one of::

    {"type": "text", "text": "..."}
    {"type": "image", "image": PIL.Image | LoadedImage | path | URL | bytes | None}
    {"type": "video", "video": VideoClip | path | URL | bytes | None}

Where messages come from and go to:

- engine requests (``backends.base.Request``): ``user_turn`` builds them; each back end maps the media parts to its
  own form with ``map_media`` (openai: ``image_url`` / ``video_url`` parts; a chat template: bare placeholders);
- training data (curated ``prompt`` columns, the official RL parquet): text content with an ``<image>`` (or
  ``<video>``) placeholder; ``with_media_parts`` turns the placeholder into a typed part, ``without_placeholders``
  drops it (TRL inserts the image part itself);
- preference pairs and exports: ``message(role, text)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

Message = dict[str, Any]
Part = dict[str, Any]

#: the media placeholders of text prompts in training data
PLACEHOLDERS = {"image": "<image>", "video": "<video>"}


def message(role: str, content: str | list[Part]) -> Message:
    return {"role": role, "content": content}


def user_turn(
    text: str, *, images: Sequence[Any] = (), videos: Sequence[Any] = (), system: str | None = None
) -> list[Message]:
    """One user turn (after an optional system message): media first, then the text (Qwen-VL's order); the content
    stays a plain string when there are no media."""
    parts: list[Part] = [{"type": "image", "image": im} for im in images]
    parts += [{"type": "video", "video": v} for v in videos]
    parts.append({"type": "text", "text": text})
    messages = [message("system", system)] if system else []
    messages.append(message("user", parts if (images or videos) else text))
    return messages


def media_of(messages: Iterable[Message], kind: str) -> list[Any]:
    """The values of every ``kind`` ("image" / "video") part, in order."""
    return [p[kind] for m in messages if isinstance(m["content"], list) for p in m["content"] if p.get("type") == kind]


def map_media(messages: Iterable[Message], to_parts: Callable[[Part], list[Part]]) -> list[Message]:
    """New messages where each image / video part becomes ``to_parts(part)`` (any number of parts); text parts and
    string contents are kept as they are."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            parts: list[Part] = []
            for p in content:
                parts += to_parts(p) if p.get("type") in ("image", "video") else [p]
            content = parts
        out.append(message(m["role"], content))
    return out


def with_media_parts(messages: Iterable[Message], media: Any = None, kind: str = "image") -> list[Message]:
    """Text messages with a placeholder (``<image>``) -> typed parts: the media part (value ``media``) first, then
    the text without the placeholder; a message without the placeholder stays text."""
    tag = PLACEHOLDERS[kind]
    out = []
    for m in messages:
        text = m["content"]
        if isinstance(text, str) and tag in text:
            rest = text.replace(tag, "").strip()
            out.append(
                message(m["role"], [{"type": kind, kind: media}] + ([{"type": "text", "text": rest}] if rest else []))
            )
        else:
            out.append(message(m["role"], text))
    return out


def without_placeholders(messages: Iterable[Message]) -> list[Message]:
    """Text messages with their media placeholders removed (TRL's multimodal prompts: it inserts the parts)."""
    out = []
    for m in messages:
        text = m["content"]
        for tag in PLACEHOLDERS.values():
            text = text.replace(tag, "")
        out.append(message(m["role"], text.strip()))
    return out
