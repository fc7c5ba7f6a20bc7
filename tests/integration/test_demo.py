"""A reduced `caprl demo` end to end: the learning proof in small (RL beats SFT-only and the image-blind ceiling on
held-out images), the GRPO-over-HTTP and DPO rows, the report, and the resume (a rerun redoes nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from caprl_kit import demo
from caprl_kit.cli import app
from caprl_kit.demo import run_demo

REDUCED = dict(n_train=200, n_val=40, n_test=60, sft_steps=300, rl_steps=50, eval_steps=25)


@pytest.mark.slow
def test_reduced_demo_learns_and_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative output directory, as `caprl demo` uses by default
    out = Path("demo")
    summary = run_demo(out, **REDUCED)
    train = summary["curate"]["train"]
    assert train["items_in"] == 201 and train["items_kept"] == 200 and train["dropped"] == {"failed_to_decode": 1}
    assert summary["annotate"]["items"] == summary["annotate"]["ok"] == 60
    ev = summary["eval"]
    # the weaker CI threshold of the learning proof (the full run's bar is A1 >= A0 + 0.20 and A1 >= 0.55)
    assert ev["A1_rl"] >= ev["A0_sft"] + 0.10, ev
    assert ev["A1_rl"] >= ev["blind_ceiling"] + 0.10, ev
    assert 0.0 < ev["blind_ceiling"] < 0.5
    report = Path(summary["report"]).read_text()
    assert f"{ev['A1_rl']:.3f}" in report and "<polyline" in report and "data:image/png;base64" in report
    assert json.loads((out / "summary.json").read_text())["eval"]["A1_rl"] == ev["A1_rl"]
    for who in ("A0_sft", "A1_rl"):  # the caption monitors of both captioners, in the summary and the report
        rates = ev["monitors"][who]
        assert set(rates) == {"truncated", "repetitive", "boilerplate_opener", "meta_ending", "empty"}
        assert f"{rates['truncated']:.1%}" in report

    # the other trainers from the same warm start: GRPO scored by a `caprl serve-reward` process, DPO on pairs
    rows = summary["trainers"]
    assert abs(rows["grpo_http"]["accuracy"] - ev["A1_rl"]) <= 0.05, rows
    assert rows["grpo_http"]["reward_service"]["captions_per_s"] > 0 and rows["grpo_http"]["reward_service"]["latency_s"] > 0
    assert rows["dpo"]["pairs"] > 0 and 0.0 <= rows["dpo"]["chosen_longer_share"] <= 1.0
    assert rows["dpo"]["accuracy"] >= ev["A0_sft"] + 0.10, rows  # the full run's bar is A0 + 0.20
    assert "reward over HTTP" in report and f"{rows['dpo']['pairs']} pairs" in report
    assert (out / "pairs" / "pairs.parquet").is_file() and (out / "train_dpo" / "best" / "config.json").is_file()

    shards = (sorted((out / "annotate").glob("*.parquet")) + sorted((out / "train").glob("best/*.safetensors"))
              + sorted((out / "pairs" / "scored").glob("*.parquet")) + sorted(out.glob("train_*/best/*.safetensors")))
    stamps = [p.stat().st_mtime_ns for p in shards]
    args = ["demo", "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in REDUCED.items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # resumed, not redone
    assert "held-out QA accuracy" in result.output and "report.html" in result.output


@pytest.mark.slow
def test_the_faithfulness_proof_runs_its_three_arms(tmp_path: Path) -> None:
    """`caprl demo --faithfulness` in miniature (the plumbing; the full run's figures are in docs/hacking.md): the
    warm start's captions end in a false sentence 80% of the time, every captioner's claims are checked against
    the reference caption, and GRPO on QA + faithfulness (per term) runs from the same warm start."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--faithfulness", "--no-trainers", "--n-train=40",
                                      "--n-val=20", "--n-test=20", "--sft-steps=20", "--rl-steps=2", "--eval-steps=1"])
    assert result.exit_code == 0, result.output
    manifest = [json.loads(x) for x in (out / "data" / "train" / "manifest.jsonl").read_text().splitlines()]
    lies = [r for r in manifest if r.get("has_false_statement")]
    assert 24 <= len(lies) <= 40 and all(r["caption_incomplete"].endswith(" in the background.") for r in lies)
    ev = json.loads((out / "summary.json").read_text())["eval"]
    assert set(ev["hallucinated_claim_rate"]) == set(ev["claim_precision"]) == {"A0_sft", "A1_rl", "A2_faithful"}
    assert all(r is None or 0.0 <= r <= 1.0 for r in ev["hallucinated_claim_rate"].values())
    fcfg = (out / "train_faithful" / "config.resolved.yaml").read_text()
    assert "faithfulness" in fcfg and "per_term" in fcfg and (out / "train_faithful" / "best" / "config.json").is_file()
    assert 'id="faithful"' in (out / "report.html").read_text() and "hallucinated claims:" in result.output
    for arm in ("train", "train_faithful"):  # both GRPO arms anchored to the warm start by the same KL penalty
        resolved = yaml.safe_load((out / arm / "config.resolved.yaml").read_text())
        assert resolved["algorithm"]["kl_coef"] == demo.FAITHFUL_KL > 0
    # the faithfulness arm's best/ is the validation with the best accuracy + 0.25 x claim precision, the QA arm's
    # the one with the best accuracy
    for arm, key in (("train", "val/qa_accuracy"), ("train_faithful", "val/score")):
        vals = [r for r in map(json.loads, (out / arm / "metrics.jsonl").read_text().splitlines()) if key in r]
        assert len(vals) == 3 and ("val/score" in vals[0]) == (arm == "train_faithful")
        best = max(vals, key=lambda r: r[key])  # the first of equal ones, as the selection keeps the earlier
        assert json.loads((out / arm / "best.json").read_text())["step"] == best["step"]
