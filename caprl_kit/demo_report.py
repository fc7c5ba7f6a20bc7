"""The demo's one-page HTML report: the learning proof (A1 vs A0 vs the blind ceiling), training curves, the curate
funnel, the eval table and sample captions with their images. Self-contained (inline SVG, base64 thumbnails)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from caprl_kit.monitors import FLAGS


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, y_range: tuple[float, float] | None = None,
               width: int = 460, height: int = 220) -> str:
    """Inline SVG: one polyline per named series of (x, y) points, axes with min/max labels."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad, colors = 36, ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    def xy(x: float, y: float) -> str:
        return (f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
                f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}")

    lines, legend = [], []
    for i, (name, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        lines.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(xy(*p) for p in pts)}"/>')
        legend.append(f'<text x="{pad + 6 + 150 * i}" y="14" fill="{c}" font-size="12">{html.escape(name)}</text>')
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
            f'<text x="2" y="{height - pad}" font-size="11">{y0:.2f}</text><text x="2" y="{pad + 4}" font-size="11">'
            f'{y1:.2f}</text><text x="{pad}" y="{height - 8}" font-size="11">{x0:g}</text>'
            f'<text x="{width - pad - 20}" y="{height - 8}" font-size="11">{x1:g}</text>')
    return (f'<figure><svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">{axes}'
            f'{"".join(lines)}{"".join(legend)}</svg><figcaption>{html.escape(title)}</figcaption></figure>')


def _bars(values: list[tuple[str, float]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td><div class='bar' style='width:{v * 300:.0f}px'></div></td>"
                   f"<td>{v:.3f}</td></tr>" for k, v in values)
    return f"<table id='proof'>{rows}</table>"


def _thumb(path: str) -> str:
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode()
    except OSError:
        return ""
    return f"<img src='data:image/png;base64,{data}' width='84' height='84'>"


def _samples(out: Path, n: int = 8) -> str:
    """Side-by-side captions of the same held-out images (SFT-only vs RL) with their QA scores."""
    import pyarrow.parquet as pq

    runs = {}
    for name in ("sft", "rl"):
        files = sorted((out / "eval" / name).glob("samples_qa_utility_*.jsonl"))
        runs[name] = {r["sample_id"]: r for r in _jsonl(files[-1])} if files else {}
    test = out / "curate" / "test" / "dataset" / "train.parquet"
    if not test.is_file() or not runs["rl"]:
        return "<p>no samples</p>"
    rows = pq.read_table(test, columns=["id", "images"]).to_pylist()[:n]
    body = []
    for r in rows:
        s, t = runs["sft"].get(r["id"], {}), runs["rl"].get(r["id"], {})
        body.append(f"<tr><td>{_thumb(r['images'][0])}</td><td>{html.escape(s.get('caption', ''))}<br><small>QA "
                    f"{s.get('score', 0):.2f}</small></td><td>{html.escape(t.get('caption', ''))}<br><small>QA "
                    f"{t.get('score', 0):.2f}</small></td></tr>")
    return ("<table id='samples'><tr><th>held-out image</th><th>SFT warm start only</th><th>SFT + GRPO</th></tr>"
            f"{''.join(body)}</table>")


def _rates(ev: dict[str, Any], who: str) -> str:
    rates = ev.get("monitors", {}).get(who, {})
    return "".join(f"<td>{rates[f]:.1%}</td>" if f in rates else "<td>-</td>" for f in FLAGS)


def write_report(out: Path, summary: dict[str, Any], curated: dict[str, dict[str, Any]]) -> Path:
    ev = summary["eval"]
    train_dir = out / "train"
    metrics = _jsonl(train_dir / "metrics.jsonl")
    reward = [(m["step"], m["reward"]) for m in metrics if "reward" in m]
    val = [(m["step"], m["val/qa_accuracy"]) for m in metrics if "val/qa_accuracy" in m]
    sft = [(m["step"], m["loss"]) for m in _jsonl(train_dir / "sft_metrics.jsonl")]
    funnel_keys = ["items_in", "items_kept", "questions_parsed", "questions_pass_visual", "questions_pass_text",
                   "questions_kept"]
    funnel = "".join(f"<tr><td>{s}</td>" + "".join(f"<td>{c['funnel'].get(k, '')}</td>" for k in funnel_keys)
                     + f"<td>{html.escape(json.dumps(c['dropped']))}</td></tr>" for s, c in curated.items())
    verdict = ("RL beats SFT-only and the blind ceiling" if ev["A1_rl"] > ev["A0_sft"] and ev["A1_rl"] > ev["blind_ceiling"]
               else "RL did NOT beat both baselines in this run")
    best = summary["train"]
    flag_heads = "".join(f"<th>{f.replace('_', ' ')}</th>" for f in FLAGS)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>caprl demo report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}} .bar{{background:#1f77b4;height:14px}}
figure{{display:inline-block;margin:0 1em 1em 0}}</style></head><body>
<h1>caprl demo: the CapRL loop on a CPU</h1>
<p>A tiny Qwen2.5-VL captioner, warm-started on <em>incomplete</em> captions, trained with GRPO on the QA-accuracy
reward (a text-only answerer reads the caption and answers multiple-choice questions about the image). Held-out test
images, greedy captions, every question asked once. <strong>{verdict}.</strong></p>
<h2>Held-out QA accuracy</h2>
{_bars([("SFT + GRPO, checkpoint chosen on validation (A1)", ev["A1_rl"]), ("SFT warm start only (A0)", ev["A0_sft"]),
        ("image-blind ceiling (best single fixed caption)", ev["blind_ceiling"])])}
<p>A1 - A0 = {ev["gain"]:+.3f}. Best validation accuracy {best["best_val_qa_accuracy"]:.3f} at RL step {best["best_step"]}.</p>
<h2>Training</h2>
{line_chart({"SFT loss": sft}, "SFT warm start: loss per step")}
{line_chart({"train reward (mean)": reward, "validation QA accuracy": val}, "GRPO: reward and validation accuracy",
            y_range=(0.0, 1.0))}
<h2>Curate funnel</h2>
<table id="funnel"><tr><th>split</th>{"".join(f"<th>{k}</th>" for k in funnel_keys)}<th>dropped</th></tr>{funnel}</table>
<h2>Eval</h2>
<table id="eval"><tr><th>captioner</th><th>held-out QA accuracy</th>{flag_heads}</tr>
<tr><td>SFT + GRPO (best on validation)</td><td>{ev["A1_rl"]:.4f}</td>{_rates(ev, "A1_rl")}</tr>
<tr><td>SFT warm start only</td><td>{ev["A0_sft"]:.4f}</td>{_rates(ev, "A0_sft")}</tr>
<tr><td>image-blind ceiling</td><td>{ev["blind_ceiling"]:.4f}</td>{"<td></td>" * len(FLAGS)}</tr></table>
<p>The caption columns are the caption monitors' rates over the held-out captions (truncated at the demo's 16-token
cap, repeated phrases, boilerplate openers, closing meta remarks, empty): what RL did to caption hygiene.</p>
<p>Per-run eval reports: <a href="eval/sft/report.html">SFT only</a>, <a href="eval/rl/report.html">SFT + GRPO</a>.</p>
<h2>Sample captions (held-out images)</h2>
{_samples(out)}
</body></html>
"""
    path = out / "report.html"
    tmp = path.with_suffix(".html.partial")
    tmp.write_text(page)
    tmp.replace(path)
    return path
