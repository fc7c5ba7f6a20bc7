"""LLaMA-Factory (hiyouga/LLaMA-Factory, ``data/README.md``): sharegpt-formatted JSONL with the role/content tags
and a ``dataset_info.json`` naming each file, its columns and tags, so ``dataset_dir: OUT`` and
``dataset: caprl_captions`` (or ``caprl_qa``, ``caprl_pairs``) train on it; media paths are relative to the export
folder, which LLaMA-Factory's ``media_dir`` defaults to (its ``dataset_dir``).

- annotate run -> ``captions.jsonl`` (``caprl_captions``): image + captioning prompt -> caption, the conversation
  the CapRL paper's pretraining stage trains on (one row per caption, or ``--captions first``).
- curate run -> ``qa_train.jsonl`` / ``qa_val.jsonl`` (``caprl_qa`` / ``caprl_qa_val``): one SFT row per kept
  question, image + the question with its options (curate's answering prompt) -> the answer letter.
- pairs run -> ``pairs.jsonl`` (``caprl_pairs``, ``ranking: true``): the prompt, ``chosen`` and ``rejected``.
"""

from __future__ import annotations

from typing import Any

from caprl_kit.curate.prompts import ANSWER_TEMPLATE
from caprl_kit.exports.chat import assistant, caption_rows, user
from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.formats import ExportFormat
from caprl_kit.exports.runs import Run, pair_items, qa_items
from caprl_kit.mcq.options import render
from caprl_kit.schemas.curate import MCQ

DATASET_INFO = "dataset_info.json"
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def dataset_entry(file: str, media_columns: set[str], *, ranking: bool = False) -> dict[str, Any]:
    """A ``dataset_info.json`` entry: sharegpt formatting, the columns the rows use, the role/content tags."""
    columns = {"messages": "messages", **{c: c for c in sorted(media_columns)}}
    if ranking:
        columns.update(chosen="chosen", rejected="rejected")
    entry: dict[str, Any] = {"file_name": file, "formatting": "sharegpt"}
    if ranking:
        entry["ranking"] = True
    return {**entry, "columns": columns, "tags": TAGS}


def qa_prompt(question: dict[str, Any]) -> str:
    """A kept question as curate's answerer saw it: the stem, its labelled options, the letter instruction."""
    return ANSWER_TEMPLATE.format(question=render(MCQ.model_validate(question)))


def write_captions(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    media: set[str] = set()
    with out.jsonl("captions.jsonl") as f:
        for row, column in caption_rows(run, out, opts):
            f.write(row)
            media.add(column)
    if "captions.jsonl" in out.files:
        out.json(DATASET_INFO, {"caprl_captions": dataset_entry("captions.jsonl", media)}, rows=0)


def write_qa(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    names = {"train": ("caprl_qa", "qa_train.jsonl"), "val": ("caprl_qa_val", "qa_val.jsonl")}
    media: dict[str, set[str]] = {"train": set(), "val": set()}
    with out.jsonl(names["train"][1]) as train, out.jsonl(names["val"][1]) as val:
        for item in qa_items(run, out):
            path = out.media_path(item.media)
            if path is None:
                continue
            f = train if item.split == "train" else val
            for q in item.questions:
                f.write(
                    {
                        "messages": [user(item.media, qa_prompt(q)), assistant(q["answer"])],
                        item.media.column: [path],
                    }
                )
            media[item.split].add(item.media.column)
    info = {name: dataset_entry(file, media[split]) for split, (name, file) in names.items() if file in out.files}
    if info:
        out.json(DATASET_INFO, info, rows=0)


def write_pairs(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    with out.jsonl("pairs.jsonl") as f:
        for item in pair_items(run, out):
            path = out.media_path(item.media)
            if path is None:
                continue
            f.write(
                {
                    "messages": [user(item.media, item.prompt)],
                    "chosen": assistant(item.chosen),
                    "rejected": assistant(item.rejected),
                    item.media.column: [path],
                }
            )
    if "pairs.jsonl" in out.files:
        out.json(DATASET_INFO, {"caprl_pairs": dataset_entry("pairs.jsonl", {"images"}, ranking=True)}, rows=0)


FORMAT = ExportFormat(
    name="llamafactory",
    summary="LLaMA-Factory sharegpt JSONL + dataset_info.json: caption SFT/pretraining, QA SFT, DPO pairs",
    writers={"annotate": write_captions, "curate": write_qa, "pairs": write_pairs},
    options=frozenset({"media", "captions"}),
)
