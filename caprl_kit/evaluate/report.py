"""Self-contained HTML report comparing captioners side by side: a table per benchmark, a bar chart of M_Acc,
the caption-length distribution and example captions. ``caprl eval compare DIR [DIR ...] --out report.html``."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import ValidationError

from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import url_to_fs
from caprl_kit.io.rows import read_rows
from caprl_kit.reports.charts import pct
from caprl_kit.schemas.evaluation import EvalResults
from caprl_kit.schemas.layout import EVAL_RESULTS_LATEST, EVAL_SAMPLES


def load_run(output_dir: str) -> tuple[EvalResults, dict[str, list[dict[str, Any]]]]:
    fs, base = url_to_fs(output_dir)
    latest = f"{base.rstrip('/')}/{EVAL_RESULTS_LATEST}"
    if not fs.exists(latest):
        raise CaprlError(f"{output_dir} holds no results_latest.json: run `caprl eval` there first")
    try:
        results = EvalResults.model_validate_json(fs.cat(latest))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise CaprlError(
            f"{output_dir}/results_latest.json is not a valid caprl eval results file ({where}: "
            f"{first['msg']}); rerun `caprl eval` into {output_dir}, or drop it from the comparison"
        ) from None
    samples: dict[str, list[dict[str, Any]]] = {}
    for task in results.tasks:
        files = sorted(fs.glob(f"{base.rstrip('/')}/" + EVAL_SAMPLES.format(task=task, ts="*")))
        if files:
            samples[task] = read_rows(fs.unstrip_protocol(files[-1]))
    return results, samples


EDGES = [0, 10, 25, 50, 100, 200, 400, 800, 10**9]  #: caption-length histogram bins (words)


def _hygiene(rates: dict[str, float], cannot_answer: float | None = None) -> str:
    """The caption monitors' nonzero rates and the answerer's cannot-answer rate, e.g. ``truncated 12.0% ·
    cannot answer 30.0%`` (``-``: nothing recorded)."""
    shown = [f"{flag.replace('_', ' ')} {pct(rate)}" for flag, rate in rates.items() if rate]
    if cannot_answer is not None:
        shown.append(f"cannot answer {pct(cannot_answer)}")
    return " · ".join(shown) if shown else ("none" if rates else "-")


def _length_counts(samples: dict[str, list[dict[str, Any]]]) -> list[int]:
    counts = [0] * (len(EDGES) - 1)
    seen: set[str] = set()
    for rows in samples.values():
        for r in rows:
            cap = r.get("caption") or ""
            if cap in seen:
                continue
            seen.add(cap)
            n = len(cap.split())
            counts[next(i for i in range(len(EDGES) - 1) if EDGES[i] <= n < EDGES[i + 1])] += 1
    return counts


def _utility(task: str, runs: list[tuple[EvalResults, dict[str, list[dict[str, Any]]]]]) -> dict[str, Any]:
    """The task's utility@k table (a row per run that has it, a column per cut any of them made) and curve (x:
    log2 k)."""
    import math

    rows = [(res.captioner, u) for res, _ in runs if (t := res.tasks.get(task)) and (u := t.utility_at_k)]
    ks = sorted({c.k for _, u in rows for c in u.cuts})
    return {
        "utility_ks": ks,
        "utility": [
            {"captioner": name, "u": u, "at_k": [{c.k: c.utility for c in u.cuts}.get(k) for k in ks]}
            for name, u in rows
        ],
        "utility_curve": {
            name: [(math.log2(c.k), c.utility) for c in u.cuts if c.utility is not None] for name, u in rows
        },
    }


def summary_rows(runs: list[EvalResults], tasks: list[str]) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Each run's average with the tasks it is over (those with a score), the tasks every run scored, and whether
    the runs' averages are over different task sets (then each is marked and the shared-task average shown)."""
    scored = [[t for t in tasks if (r := res.tasks.get(t)) is not None and r.m_acc is not None] for res in runs]
    shared = [t for t in tasks if all(t in s for s in scored)]
    rows = []
    for res, own in zip(runs, scored):
        values = [res.tasks[t].m_acc for t in shared]
        rows.append(
            {
                "r": res,
                "tasks": own,
                "shared_average": sum(v for v in values if v is not None) / len(values) if values else None,
            }
        )
    return rows, shared, len({tuple(s) for s in scored}) > 1


def render_report(runs: list[tuple[EvalResults, dict[str, list[dict[str, Any]]]]]) -> str:
    """The page (reports/templates/eval_report.html.j2) for one run or several side by side. Averages over
    different task sets are marked, with the average over the tasks every run scored beside them."""
    from caprl_kit.reports import render

    tasks = list(dict.fromkeys(t for res, _ in runs for t in res.tasks))
    summary, shared, differ = summary_rows([res for res, _ in runs], tasks)
    per_task = []
    for task in tasks:
        rows = [
            {
                "captioner": res.captioner,
                "t": res.tasks[task],
                "flags": _hygiene(res.tasks[task].caption_monitors, res.tasks[task].cannot_answer_rate),
            }
            for res, _ in runs
            if task in res.tasks
        ]
        blind = next(
            (res.tasks[task] for res, _ in runs if task in res.tasks and res.tasks[task].blind_ceiling is not None),
            None,
        )
        per_task.append({"name": task, "rows": rows, "blind": blind, **_utility(task, runs)})
    chart = [
        (
            task,
            [
                (res.captioner, t.m_acc if (t := res.tasks.get(task)) and t.m_acc is not None else 0.0)
                for res, _ in runs
            ],
        )
        for task in tasks
    ]
    heads = [f"{a}-{b - 1 if b < 10**9 else '...'}" for a, b in itertools.pairwise(EDGES)]
    examples = [
        {"captioner": res.captioner, "task": task, "caption": (r.get("caption") or "")[:400], "score": r.get("score")}
        for res, samples in runs
        for task, rows in list(samples.items())[:2]
        for r in rows[:2]
    ]
    return render(
        "eval_report.html.j2",
        summary=summary,
        shared=shared,
        differ=differ,
        chart=chart,
        per_task=per_task,
        length_heads=heads,
        lengths=[(res.captioner, _length_counts(samples)) for res, samples in runs],
        examples=examples,
    )


def compare(output_dirs: list[str]) -> str:
    return render_report([load_run(d) for d in output_dirs])


REPORT_TITLE = "<title>caprl eval report</title>"  #: in the head of every page render_report writes


def claim_report_file(url: str) -> None:
    """``caprl eval compare --output FILE``: a new file, or a report caprl wrote before (its title says so), may be
    written; a folder or any other file is refused naming it, never replaced."""
    fs, path = url_to_fs(url)
    if not fs.exists(path):
        return
    if fs.isdir(path):
        raise CaprlError(
            f"output refused: {url} is a folder; pass --output a file path such as {url.rstrip('/')}/report.html"
        )
    with fs.open(path, "rb") as fh:
        head = fh.read(4096)
    if REPORT_TITLE.encode() not in head:
        raise CaprlError(
            f"output refused: {url} exists and is not a caprl eval report. Nothing was written. Pass "
            "--output a new file, or a report `caprl eval compare` wrote before"
        )
