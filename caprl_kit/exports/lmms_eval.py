"""lmms-eval's caption tasks (EvolvingLMMs-Lab/lmms-eval: ``detailcaps``, ``captionqa_*``, ``vdc_*_test``) scored
on captions made elsewhere: the log layout its ``from_log`` model reads (``lmms_eval/models/simple/from_log.py``;
lmms-eval documents no caption-file format, its docs list ``from_log`` only by name).

One JSON file per task::

    {"args": {"model": CAPTIONER, "model_args": "pretrained=CAPTIONER", "limit": null},
     "model_configs": {"task": "detailcaps"},
     "time": "MMDD_HHMM",
     "logs": [{"doc_id": 0, "resps": [["the caption"]], "image_id": "...", "key": "..."}, ...]}

``from_log`` answers each request of task T for document ``doc_id`` with ``logs[doc_id]["resps"][0][0]``, so
``doc_id`` must be the document's index in the task's split as lmms-eval loads it. By default it is the item's
place in the run's input (annotate: its input order; eval: its benchmark's media order): caption the task's
documents in that order, or give ``--doc-ids FILE`` (``{image file name or item key: doc_id}``).
Scored with ``python -m lmms_eval --model from_log --model_args logs=OUT --tasks TASK``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.formats import ExportFormat
from caprl_kit.exports.runs import Run, caption_items, caption_runs

TASK_EXAMPLES = "detailcaps, captionqa_natural, vdc_detailed_test"


def read_doc_ids(path: str) -> dict[str, int]:
    """``--doc-ids``: a JSON object ``{image file name or item key: doc_id}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaprlError(f"--doc-ids {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        raise CaprlError(f"--doc-ids {path} must be a JSON object {{image file name or item key: integer doc_id}}")
    return data


def check(run: Run, opts: ExportOptions) -> None:
    """An annotate run needs the lmms-eval task's name; ``--lmms-task`` names one task; ``--doc-ids`` reads."""
    if opts.lmms_task is None and run.kind == "annotate":
        raise CaprlError(
            f"--format lmms_eval needs --lmms-task NAME for an annotate run: the lmms-eval task its captions are "
            f"for ({TASK_EXAMPLES}, ...)"
        )
    sources = caption_runs(run)
    if opts.lmms_task is not None and len(sources) > 1:
        raise CaprlError(
            f"--lmms-task names one task, and {run.url} holds the captions of {len(sources)} tasks "
            f"({', '.join(str(s.task) for s in sources)}): export one task's folder, {run.url}/captions/<task>"
        )
    if opts.doc_ids:
        read_doc_ids(opts.doc_ids)


def write_logs(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    sources = caption_runs(run)
    doc_ids = read_doc_ids(opts.doc_ids) if opts.doc_ids else None
    stamp = time.strftime("%m%d_%H%M", time.gmtime())
    for source in sources:
        task = opts.lmms_task or str(source.task)
        logs: dict[int, dict[str, Any]] = {}
        model = None
        for item in caption_items(source, out, first=True, with_media=False):
            doc = item.position if doc_ids is None else doc_ids.get(item.image_id, doc_ids.get(item.key))
            if doc is None:
                out.skip("not_in_doc_ids")
                continue
            if doc in logs:
                raise CaprlError(
                    f"items {logs[doc]['key']} and {item.key} both map to lmms-eval doc_id {doc}"
                    + (f" in --doc-ids {opts.doc_ids}" if opts.doc_ids else "")
                )
            logs[doc] = {"doc_id": doc, "resps": [[item.captions[0]]], "image_id": item.image_id, "key": item.key}
            model = model or item.model
        if not logs:
            continue
        record = {
            "args": {"model": model, "model_args": f"pretrained={model}", "limit": None},
            "model_configs": {"task": task},
            "time": stamp,
            "logs": [logs[d] for d in sorted(logs)],
        }
        out.json(f"{task}.json", record, rows=len(logs))


FORMAT = ExportFormat(
    name="lmms_eval",
    summary="lmms-eval from_log files for its caption tasks (detailcaps, captionqa, vdc)",
    writers={"annotate": write_logs, "eval": write_logs},
    options=frozenset({"captions", "lmms_task", "doc_ids"}),
    one_caption=True,
    check=check,
)
