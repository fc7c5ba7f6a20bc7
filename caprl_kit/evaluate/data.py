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
from caprl_kit.io.rows import parse_jsonl_lines

#: the prefix the official stage 2 replaces with the caption sentence (spec §5.1)
OFFICIAL_PREFIX = re.compile(
    r"^(?:<\|im_start\|>system\n.*?<\|im_end\|>\n)?<\|im_start\|>user\n"
    r"(?:<\|vision_start\|><\|(?:image|video)_pad\|><\|vision_end\|>)+",
    re.DOTALL,
)
OFFICIAL_SUFFIX = re.compile(r"<\|im_end\|>\s*<\|im_start\|>assistant\s*$", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    id: str
    media: str
    media_type: str
    question: str  # the user text after the media (the official prompt's remainder)
    gold: str
    options: tuple[tuple[str, str], ...] = ()  # (letter, text) of a video layout's multiple-choice question
    open_ended: bool = False  # answered in free text, scored by the judge
    raw_question: str = ""  # the benchmark's own question text, as the judge's prompt quotes it
    groups: tuple[tuple[str, str], ...] = ()  # (dimension, group) of the benchmark's breakdowns it counts in


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


def _question_problem(row: dict[str, Any]) -> str | None:
    """Why ``row`` asks no question (None: it asks one). An official row asks its ``prompt`` (a Qwen chat string,
    the text after the media); our rows ask ``question``: a missing, null or blank one is refused at the start."""
    if isinstance(row.get("prompt"), str):
        return None if question_text(row).strip() else "'prompt' holds no question after the media"
    q = row.get("question")
    if q is None:
        return "'question' is missing" if "question" not in row else "'question' is null"
    if not str(q).strip():
        return f"'question' is empty ({q!r})"
    return None


def read_rows(bench: BenchmarkConfig) -> list[dict[str, Any]]:
    """The benchmark file's rows: a JSON list (or ``{"data": [...]}``), JSONL, or Parquet. A missing or malformed
    file is a ``CaprlError`` naming the file (and, for JSON/JSONL, the line)."""
    where = f"benchmark {bench.name}: {bench.path}"
    fs, path = url_to_fs(bench.path)
    if not fs.exists(path):
        raise CaprlError(f"{where} does not exist; fix its path (benchmarks[].path) or download the benchmark")
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with fs.open(path, "rb") as fh:
                return pq.read_table(fh).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise CaprlError(f"{where} is not a readable Parquet file ({exc})") from None
    with fs.open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaprlError(f"{where} is not UTF-8 text ({exc}); benchmarks are JSON, JSONL or Parquet") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):  # one JSON document (the official lmm_eval_*.json layout)
            raise CaprlError(f"{where} line {exc.lineno} is not valid JSON ({exc.msg}, column {exc.colno})") from None
        rows = list(parse_jsonl_lines(text.splitlines(), where))
    else:
        if isinstance(data, dict):  # {"data": [...]}, or a JSONL file of one row
            data = data["data"] if isinstance(data.get("data"), list) else [data]
        if not isinstance(data, list):
            raise CaprlError(f"{where} holds JSON but not rows (a list of objects, or JSONL)")
        rows = data
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise CaprlError(f"{where} row {bad} is not a JSON object")
    return rows


def load_benchmark(bench: BenchmarkConfig) -> list[Sample]:
    """The benchmark's samples, read by its layout (``benchmarks[].layout``, ``layouts.py``)."""
    from caprl_kit.evaluate.layouts import LAYOUTS

    samples: list[Sample] = LAYOUTS.get(bench.layout).load(bench)
    return samples


def read_benchmark(bench: BenchmarkConfig) -> list[Sample]:
    """The samples of a file in eval's own layout (``caprl``)."""
    rows = read_rows(bench)
    root = bench.image_root or posixpath.dirname(bench.path)
    samples = []
    for i, row in enumerate(rows[: bench.limit] if bench.limit else rows):
        media = row.get("video") if bench.media_type == "video" else row.get("image")
        if isinstance(media, list):
            media = media[0] if media else None
        if not media or "answer" not in row:
            raise CaprlError(
                f"benchmark {bench.name}: {bench.path} row {i}: needs '{bench.media_type}' and "
                f"'answer' (found {', '.join(row) or 'no keys'})"
            )
        if row["answer"] is None or not str(row["answer"]).strip():  # would be scored against the string "None"
            raise CaprlError(
                f"benchmark {bench.name}: {bench.path} row {i}: 'answer' is empty ({row['answer']!r}); "
                "fix or drop the row"
            )
        question = _question_problem(row)
        if question:  # would ask the answerer "" or "None" and score the reply as a real sample
            raise CaprlError(f"benchmark {bench.name}: {bench.path} row {i}: {question}; fix or drop the row")
        media = str(media)
        if "://" not in media and not media.startswith("/"):
            media = posixpath.join(root, media)
        sid = str(row.get("id", row.get("index", f"{bench.name}_{i:05d}")))
        samples.append(Sample(sid, media, bench.media_type, question_text(row), str(row["answer"])))
    if not samples:  # a score over nothing would enter the average as a real number
        raise CaprlError(
            f"benchmark {bench.name}: {bench.path} has no rows, so nothing was written: looked for rows "
            f"with '{bench.media_type}' and 'answer' (a JSON list, JSONL or Parquet"
            f"{f', the first {bench.limit}' if bench.limit else ''}); point benchmarks[].path at a "
            "non-empty file or remove the benchmark"
        )
    return samples
