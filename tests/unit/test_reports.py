"""The one render layer: every page comes from a template extending the base page (one stylesheet), user text is
escaped, and the shared chart helpers draw what they are given."""

from __future__ import annotations

from caprl_kit.curate.export import funnel_html
from caprl_kit.evaluate.report import render_report
from caprl_kit.reports import charts
from caprl_kit.schemas.evaluation import EvalResults

STYLE = "border-collapse:collapse"  # from reports/templates/style.css, included by base.html.j2


def _funnel() -> dict:
    keys = ["items_in", "items_kept", "questions_generated_blocks", "questions_parsed", "questions_answered",
            "questions_pass_visual", "questions_pass_text", "questions_pass_both", "questions_kept",
            "questions_rejected_by_parser", "questions_duplicate", "questions_capped"]
    f = {k: 10 - i for i, k in enumerate(keys)}
    f.update(items_dropped={"file_not_found": 2}, per_media_type={"image": {"items_in": 10, "items_kept": 9}},
             questions_rejected={"answer_not_a_label": 1}, questions_rejected_examples=["<b>q1</b>: bad"],
             filter={"min_visual_acc": 0.75, "max_text_acc": 0.25})
    return f


def test_funnel_page() -> None:
    page = funnel_html(_funnel())
    assert page.startswith("<!doctype html>") and STYLE in page and '<svg id="funnel"' in page
    assert "<tr><td>file_not_found</td><td>2</td></tr>" in page and "answer_not_a_label" in page
    assert "&lt;b&gt;q1&lt;/b&gt;" in page and "<b>q1</b>" not in page  # user text escaped


def test_eval_page_side_by_side_escapes_captions() -> None:
    runs = []
    for name, acc in (("model-a", 0.5), ("model-<b>", 0.75)):
        res = EvalResults(captioner=name, answerer="ans", compat="fixed", average=acc, created_at="now",
                          tasks={"chartqa": {"metric": "chart", "m_acc": acc, "bon": acc, "n_samples": 4,
                                             "caption_monitors": {"truncated": 0.25, "empty": 0.0}}})
        runs.append((res, {"chartqa": [{"caption": "a <script>x</script> chart", "score": 1.0}]}))
    page = render_report(runs)
    assert STYLE in page and '<table id="summary">' in page and '<svg id="chart"' in page
    assert page.count("<tr><td>model-a</td>") == 4 and "model-&lt;b&gt;" in page  # summary, task, lengths, example
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "truncated 25.0%" in page and "empty" not in page.split("caption flags")[1].split("</table>")[0]


def test_chart_helpers() -> None:
    bars = str(charts.hbars([("a", 1.0), ("b", 0.5)], svg_id="x", digits=2))
    assert bars.count("<rect") == 2 and 'width="420.0"' in bars and 'width="210.0"' in bars and ">0.50<" in bars
    grouped = str(charts.grouped_hbars([("task", [("m1", 0.5), ("m2", 1.0)])], svg_id="g"))
    assert grouped.count("<rect") == 2 and ">0.500<" in grouped and charts.PALETTE[1] in grouped
    line = str(charts.line_chart({"loss": [(1, 2.0), (2, 1.0)]}, "loss <per> step"))
    assert "<polyline" in line and "loss &lt;per&gt; step" in line
    assert "no data" in str(charts.line_chart({}, "t"))
    assert charts.pct(0.125) == "12.5%" and charts.pct(None) == "-" and charts.num(None) == "n/a"
