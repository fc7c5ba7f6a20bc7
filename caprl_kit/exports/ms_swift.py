"""ms-swift (modelscope/ms-swift, ``docs/source_en/Customization/Custom-dataset.md``): its standard ``messages``
JSONL with ``images`` / ``videos`` and the ``<image>`` / ``<video>`` placeholders, for ``--dataset OUT/FILE``.
Relative media paths resolve against the working directory or ``ROOT_IMAGE_DIR``: run from the export folder or
set ``ROOT_IMAGE_DIR=OUT``.

- annotate run -> ``captions.jsonl``: image + captioning prompt -> caption (SFT; one row per caption, or
  ``--captions first``).
- curate run -> ``train.jsonl`` / ``val.jsonl``: GRPO prompts (the user turn only) with each row's kept questions
  in ``ground_truth`` (ms-swift hands extra columns to the reward function as keyword arguments, as TRL does).
- pairs run -> ``pairs.jsonl``: the prompt and the chosen caption as ``messages``, the other as
  ``rejected_response`` (DPO / RM).
"""

from __future__ import annotations

from caprl_kit.exports.chat import assistant, caption_rows, user
from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.formats import ExportFormat
from caprl_kit.exports.runs import Run, pair_items, qa_items


def write_captions(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    with out.jsonl("captions.jsonl") as f:
        for row, _ in caption_rows(run, out, opts):
            f.write(row)


def write_grpo(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    with out.jsonl("train.jsonl") as train, out.jsonl("val.jsonl") as val:
        for item in qa_items(run, out):
            path = out.media_path(item.media)
            if path is None:
                continue
            (train if item.split == "train" else val).write(
                {
                    "messages": [user(item.media, item.prompt)],
                    item.media.column: [path],
                    "ground_truth": item.questions,
                    "id": item.id,
                }
            )


def write_pairs(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    with out.jsonl("pairs.jsonl") as f:
        for item in pair_items(run, out):
            path = out.media_path(item.media)
            if path is None:
                continue
            f.write(
                {
                    "messages": [user(item.media, item.prompt), assistant(item.chosen)],
                    "rejected_response": item.rejected,
                    item.media.column: [path],
                }
            )


FORMAT = ExportFormat(
    name="ms_swift",
    summary="ms-swift messages JSONL: caption SFT, GRPO prompts with ground_truth, DPO pairs (rejected_response)",
    writers={"annotate": write_captions, "curate": write_grpo, "pairs": write_pairs},
    options=frozenset({"media", "captions"}),
)
