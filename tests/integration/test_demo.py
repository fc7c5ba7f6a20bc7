"""A reduced `caprl demo` end to end (and its resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.demo import run_demo


@pytest.mark.slow
def test_reduced_demo_runs_and_resumes(tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "demo", n_images=6)
    train = summary["curate"]["train"]
    assert train["items_in"] == 7 and train["items_kept"] == 6 and train["dropped"] == {"failed_to_decode": 1}
    assert summary["annotate"]["items"] == summary["curate"]["test"]["items_in"] == 4
    assert 0.0 <= summary["eval"]["held_out_qa_accuracy"] <= 1.0
    assert Path(summary["eval"]["report"]).is_file()
    shards = sorted((tmp_path / "demo" / "annotate").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--n-images", "6"])
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # resumed, not redone
