"""Benchmark rows -> samples. Reads the official Prism evaluation files (``lmm_eval_*.json``: a JSON list of rows
with ``image`` (relative path), ``prompt`` (a ready-made Qwen chat string) and ``answer``) and our own JSONL/Parquet
rows (``image`` or ``video``, ``question``, optional ``options``, ``answer``)."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.evaluate.config import BenchmarkConfig
from caprl_kit.io.fs import url_to_fs

#: the prefix the official stage 2 replaces with the caption sentence (spec §5.1)
OFFICIAL_PREFIX = re.compile(r"^(?:<\|im_start\|>system\n.*?<\|im_end\|>\n)?<\|im_start\|>user\n"
                             r"(?:<\|vision_start\|><\|(?:image|video)_pad\|><\|vision_end\|>)+", re.DOTALL)
OFFICIAL_SUFFIX = re.compile(r"<\|im_end\|>\s*<\|im_start\|>assistant\s*$", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    id: str
    media: str
    media_type: str
    question: str  # the user text after the media (the official prompt's remainder)
    gold: str


def question_text(row: dict[str, Any]) -> str:
    if "prompt" in row and isinstance(row["prompt"], str):
        text = OFFICIAL_PREFIX.sub("", row["prompt"])
        return OFFICIAL_SUFFIX.sub("", text)
    q = str(row.get("question", ""))
    options = row.get("options") or row.get("choices")
    if options:
        labels = "ABCDEFGHIJ"
        lines = [o if re.match(r"^\(?[A-J][).:]", str(o)) else f"{labels[i]}. {o}" for i, o in enumerate(options)]
        q += "\n" + "\n".join(str(x) for x in lines)
        q += "\nAnswer with the option's letter from the given choices directly."
    return q


def load_benchmark(bench: BenchmarkConfig) -> list[Sample]:
    fs, path = url_to_fs(bench.path)
    if not fs.exists(path):
        raise CaprlError(f"benchmark {bench.name}: {bench.path} does not exist")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            rows = pq.read_table(fh).to_pylist()
    else:
        with fs.open(path, "r") as fh:
            text = fh.read()
        try:
            data = json.loads(text)
            rows = data if isinstance(data, list) else data.get("data", [])
        except json.JSONDecodeError:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    root = bench.image_root or posixpath.dirname(bench.path)
    samples = []
    for i, row in enumerate(rows[: bench.limit] if bench.limit else rows):
        media = row.get("video") if bench.media_type == "video" else row.get("image")
        if isinstance(media, list):
            media = media[0] if media else None
        if not media or "answer" not in row:
            raise CaprlError(f"benchmark {bench.name} row {i}: needs '{bench.media_type}' and 'answer'")
        media = str(media)
        if "://" not in media and not media.startswith("/"):
            media = posixpath.join(root, media)
        sid = str(row.get("id", row.get("index", f"{bench.name}_{i:05d}")))
        samples.append(Sample(sid, media, bench.media_type, question_text(row), str(row["answer"])))
    return samples
