"""Self-contained HTML report comparing captioners side by side: a table per benchmark, a bar chart of M_Acc,
the caption-length distribution and example captions. ``caprl eval compare DIR [DIR ...] --out report.html``."""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import ValidationError

from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import url_to_fs
from caprl_kit.io.layout import EVAL_RESULTS_LATEST, EVAL_SAMPLES
from caprl_kit.schemas.evaluation import EvalResults

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]


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
        raise CaprlError(f"{output_dir}/results_latest.json is not a valid caprl eval results file ({where}: "
                         f"{first['msg']}); rerun `caprl eval` into {output_dir}, or drop it from the comparison"
                         ) from None
    samples: dict[str, list[dict[str, Any]]] = {}
    for task in results.tasks:
        files = sorted(fs.glob(f"{base.rstrip('/')}/" + EVAL_SAMPLES.format(task=task, ts="*")))
        if files:
            samples[task] = _jsonl(fs, files[-1])
    return results, samples


def _jsonl(fs: Any, path: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(fs.cat(path).decode("utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CaprlError(f"{path} line {number} is not valid JSON ({exc.msg}); rerun `caprl eval` to "
                                 "rewrite it") from None
    return rows


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _bars(runs: list[tuple[EvalResults, Any]], tasks: list[str]) -> str:
    width, bar, gap = 640, 18, 14
    rows = []
    y = 10
    for task in tasks:
        rows.append(f'<text x="0" y="{y + 12}" font-size="13" font-weight="bold">{html.escape(task)}</text>')
        y += 18
        for i, (res, _) in enumerate(runs):
            t = res.tasks.get(task)
            value = t.m_acc if t and t.m_acc is not None else 0.0
            w = (width - 260) * value
            rows.append(f'<rect x="200" y="{y}" width="{w:.1f}" height="{bar - 4}" fill="{PALETTE[i % len(PALETTE)]}"/>'
                        f'<text x="0" y="{y + 11}" font-size="12">{html.escape(res.captioner[-28:])}</text>'
                        f'<text x="{205 + w:.1f}" y="{y + 11}" font-size="12">{value:.3f}</text>')
            y += bar
        y += gap
    return f'<svg id="chart" width="{width}" height="{y}" role="img" aria-label="M_Acc per task">{"".join(rows)}</svg>'


def _lengths(runs: list[tuple[EvalResults, dict[str, list[dict]]]]) -> str:
    edges = [0, 10, 25, 50, 100, 200, 400, 800, 10**9]
    head = "".join(f"<th>{a}-{b - 1 if b < 10**9 else '...'}</th>" for a, b in zip(edges, edges[1:]))
    body = []
    for res, samples in runs:
        counts = [0] * (len(edges) - 1)
        seen: set[str] = set()
        for rows in samples.values():
            for r in rows:
                cap = r.get("caption") or ""
                if cap in seen:
                    continue
                seen.add(cap)
                n = len(cap.split())
                counts[next(i for i in range(len(edges) - 1) if edges[i] <= n < edges[i + 1])] += 1
        body.append(f"<tr><td>{html.escape(res.captioner)}</td>" + "".join(f"<td>{c}</td>" for c in counts) + "</tr>")
    return f'<table id="lengths"><tr><th>captioner \\ words</th>{head}</tr>{"".join(body)}</table>'


def _hygiene(rates: dict[str, float], cannot_answer: float | None = None) -> str:
    """The caption monitors' nonzero rates and the answerer's cannot-answer rate, e.g. ``truncated 12.0% ·
    cannot answer 30.0%`` (``-``: nothing recorded)."""
    shown = [f"{flag.replace('_', ' ')} {rate:.1%}" for flag, rate in rates.items() if rate]
    if cannot_answer is not None:
        shown.append(f"cannot answer {cannot_answer:.1%}")
    return html.escape(" · ".join(shown)) if shown else ("none" if rates else "-")


def render_report(runs: list[tuple[EvalResults, dict[str, list[dict[str, Any]]]]]) -> str:
    tasks = list(dict.fromkeys(t for res, _ in runs for t in res.tasks))
    tables = []
    for task in tasks:
        rows = []
        for res, _ in runs:
            t = res.tasks.get(task)
            if t:
                rows.append(f"<tr><td>{html.escape(res.captioner)}</td><td>{_num(t.m_acc)}</td><td>{_num(t.bon)}</td>"
                            f"<td>{t.n_samples}" + (f" ({t.n_failed} not scored)" if t.n_failed else "") + "</td>"
                            f"<td>{html.escape(t.metric)}</td>"
                            f"<td>{_hygiene(t.caption_monitors, t.cannot_answer_rate)}</td></tr>")
        blind = next((res.tasks[task] for res, _ in runs if task in res.tasks and res.tasks[task].blind_ceiling
                      is not None), None)
        if blind is not None:
            rows.append(f"<tr class='blind'><td>image-blind ceiling: &laquo;{html.escape(blind.blind_caption or '')}"
                        f"&raquo;</td><td>{blind.blind_ceiling:.4f}</td><td>{blind.blind_ceiling:.4f}</td>"
                        f"<td>{blind.n_samples}</td><td>best single fixed caption</td><td></td></tr>")
        tables.append(f"<h3>{html.escape(task)}</h3><table class='results'><tr><th>captioner</th><th>M_Acc</th>"
                      f"<th>BoN</th><th>samples</th><th>metric</th><th>caption flags</th></tr>{''.join(rows)}</table>")
    avg = "".join(f"<tr><td>{html.escape(r.captioner)}</td><td>{_num(r.average)}</td><td>{html.escape(r.answerer)}</td>"
                  f"<td>{r.compat}</td></tr>" for r, _ in runs)
    examples = []
    for res, samples in runs:
        for task, rows in list(samples.items())[:2]:
            for r in rows[:2]:
                examples.append(f"<tr><td>{html.escape(res.captioner)}</td><td>{html.escape(task)}</td>"
                                f"<td>{html.escape((r.get('caption') or '')[:400])}</td><td>{r.get('score')}</td></tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>caprl eval report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}}</style></head><body>
<h1>caprl eval: Prism-style comparison</h1>
<p>Captions are scored by how well a text-only answerer solves each benchmark from the caption alone.
M_Acc = mean over samples of the mean score over captions (the paper's number); BoN = mean of the best caption.</p>
<h2>Summary</h2><table id="summary"><tr><th>captioner</th><th>average M_Acc</th><th>answerer</th><th>compat</th></tr>{avg}</table>
<h2>M_Acc per task</h2>{_bars(runs, tasks)}
<h2>Per task</h2>{''.join(tables)}
<h2>Caption length (words, distinct captions)</h2>{_lengths(runs)}
<h2>Example captions</h2><table id="examples"><tr><th>captioner</th><th>task</th><th>caption</th><th>score</th></tr>{''.join(examples)}</table>
</body></html>
"""


def compare(output_dirs: list[str]) -> str:
    return render_report([load_run(d) for d in output_dirs])
