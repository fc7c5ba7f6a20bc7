"""``compat: official`` against the official evaluator's own output on every vendored case
(tests/data/official_scorer_cases.json: the official scoring functions' results, not their code), and ``compat:
fixed`` against it: equal except on the cases whose difference docs/eval.md's table lists, each with an example."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from caprl_kit.evaluate.answer_stage import summarize
from caprl_kit.evaluate.metrics import score, scorer_for

ROOT = Path(__file__).resolve().parents[3]
DATA = json.loads((ROOT / "tests" / "data" / "official_scorer_cases.json").read_text())
CASES: list[dict[str, Any]] = DATA["cases"]
MADE_WITH = ", ".join(f"{k} {v}" for k, v in DATA["packages"].items())


def official_score(case: dict[str, Any]) -> float:
    route = scorer_for(case["task"], case["gold"], "official", case["data_path"])
    return score(case["response"], case["gold"], route, "official")[1]


def fixed_score(case: dict[str, Any]) -> float:
    return score(case["response"], case["gold"], scorer_for(case["task"], case["gold"]), "fixed")[1]


def documented_differences() -> set[str]:
    """The keys of docs/eval.md's table of differences between the two modes."""
    text = (ROOT / "docs" / "eval.md").read_text()
    section = text.split("### Every difference between `compat: fixed` and `compat: official`", 1)[1]
    section = section.split("\n#", 1)[0]
    return {m.group(1) for line in section.splitlines() if (m := re.match(r"\| `([a-z-]+)` \|", line))}


def test_the_table_is_large_and_covers_every_route() -> None:
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    routes = {scorer_for(c["task"], c["gold"], "official", c["data_path"]) for c in CASES}
    assert routes == {"math", "chart", "anls_chart"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_official_mode_equals_the_official_evaluator(case: dict[str, Any]) -> None:
    got = official_score(case)
    assert got == pytest.approx(case["official"]), (
        f"official scored {case['official']}, compat official {got} (expected outputs made with {MADE_WITH}; "
        f"installed math-verify {version('math-verify')})"
    )


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_fixed_mode_differs_only_where_the_docs_say(case: dict[str, Any]) -> None:
    got = fixed_score(case)
    if case["fixed_differs"] is None:
        assert got == pytest.approx(case["official"])
    else:
        assert got != pytest.approx(case["official"])
        assert case["fixed_differs"] in documented_differences()


def test_every_documented_difference_has_a_case() -> None:
    documented = documented_differences()
    assert len(documented) >= 8
    assert documented == {c["fixed_differs"] for c in CASES if c["fixed_differs"]}


def test_official_mode_scores_the_same_in_a_worker_thread() -> None:
    """math_verify's timeouts need the main thread; off it the scorers parse without one instead of failing every
    expression (which the official mode would score as an unparseable gold: 1.0)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(official_score, CASES))
    assert got == pytest.approx([c["official"] for c in CASES])


def test_summarize_rescores_with_the_scorer_of_the_current_mode() -> None:
    """The answers are stored once; switching compat (and so the auto scorer) rescores them."""
    by_id = {c["id"]: c for c in CASES}
    picked = [by_id["routing-char-in-folder-name"], by_id["pct-latex-vs-plain-chart"]]
    rows = [
        {
            "sample_id": c["id"],
            "status": "ok",
            "response": c["response"],
            "gold": c["gold"],
            "metric": "math",
            "score": 0.5,
        }
        for c in picked
    ]
    official = summarize([dict(r) for r in rows], "official", scorer="chart")
    assert official["metric"] == "chart"
    assert official["m_acc"] == pytest.approx(sum(c["official"] for c in picked) / 2)
    fixed_rows = [dict(r) for r in rows]
    fixed = summarize(fixed_rows, "fixed", scorer="math")
    assert [r["score"] for r in fixed_rows] == [score(c["response"], c["gold"], "math")[1] for c in picked]
    assert fixed["metric"] == "math" and {r["metric"] for r in fixed_rows} == {"math"}
