"""EasyR1 (hiyouga/EasyR1, ``verl/utils/dataset.py`` and its example datasets such as hiyouga/geometry3k):
RL prompts as JSONL rows ``{"images": [path], "problem": "<image>prompt", "answer": ...}``, read with
``data.prompt_key=problem data.answer_key=answer data.image_key=images data.image_dir=OUT``.

A curate run -> ``train.jsonl`` / ``val.jsonl``, one row per item: the captioning prompt, and in ``answer`` the
item's kept questions as a JSON string (``[{question, choices, answer}]``; EasyR1 hands it to the reward
function as ``reward_input["ground_truth"]``). Video items (``videos``, ``<video>``) go to ``train_video.jsonl`` /
``val_video.jsonl``: EasyR1 tells image rows from video rows by the columns a file has.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.formats import ExportFormat
from caprl_kit.exports.runs import Run, qa_items


def write_rl(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    # EasyR1 tells an image row from a video row by the columns present: the two go to separate files
    names = [f"{split}{kind}.jsonl" for split in ("train", "val") for kind in ("", "_video")]
    with ExitStack() as stack:
        files = {name: stack.enter_context(out.jsonl(name)) for name in names}
        for item in qa_items(run, out):
            path = out.media_path(item.media)
            if path is None:
                continue
            name = f"{item.split}{'_video' if item.media.media_type == 'video' else ''}.jsonl"
            files[name].write(
                {
                    item.media.column: [path],
                    "problem": item.media.token + item.prompt,
                    "answer": json.dumps(item.questions, ensure_ascii=False),
                    "id": item.id,
                }
            )


FORMAT = ExportFormat(
    name="easyr1",
    summary="EasyR1 RL JSONL (images / problem / answer) from curated QA",
    writers={"curate": write_rl},
    options=frozenset({"media"}),
)
