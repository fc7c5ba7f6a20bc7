"""Chat rows that LLaMA-Factory (sharegpt with the role/content tags) and ms-swift (its ``messages`` format) read
alike: ``{"messages": [{"role", "content"}, ...], "images" | "videos": [path]}``, with the trainer's ``<image>`` /
``<video>`` placeholder once per medium at the start of the user turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.runs import MediaRef, Run, caption_items, caption_runs


def user(media: MediaRef, text: str) -> dict[str, str]:
    """The user turn: the media placeholder, then the text."""
    return {"role": "user", "content": media.token + text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def caption_rows(run: Run, out: ExportDir, opts: ExportOptions) -> Iterator[tuple[dict[str, Any], str]]:
    """An annotate run's captions as SFT conversations (the captioning prompt -> a caption): one row per caption
    (``captions: all``) or per item (``first``), each with its media column's name."""
    for source in caption_runs(run):
        for item in caption_items(source, out, first=opts.captions == "first"):
            path = out.media_path(item.media)
            if path is None:
                continue
            for caption in item.captions if opts.captions == "all" else item.captions[:1]:
                row = {"messages": [user(item.media, item.prompt), assistant(caption)], item.media.column: [path]}
                yield row, item.media.column
