"""Best-of-n recaptioning (``select:``): the openai back end samples 4 captions per curated image from a scripted
server on 127.0.0.1 (four candidates that state different facts, so their QA utility differs by image), the QA
reward on each image's own questions (lexical answerer) scores them, the best is kept; quality rows, the report's
figures, a run stopped in the select stage and resumed (every item exactly once, no candidate sampled again), the
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run
from caprl_kit.cli import app
from caprl_kit.config import deep_merge, validate
from caprl_kit.errors import CaprlError, ConfigError
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.rewards.config import RewardConfig
from caprl_kit.synthetic import write_scenes
from chat_server import ChatServer
from curated_sets import curate_import, scene_rows

#: the scripted captioner's candidates for every image: none, one, two, three facts (right for some images only)
CANDIDATES = ["A picture.", "The object is red.", "A red circle at the left.", "A blue square at the right, a star."]


def scripted(body: dict, n: int) -> list[str]:
    return [CANDIDATES[i % len(CANDIDATES)] for i in range(n)]

FLAKY = '''import os


def flaky(completions, images=None, **kw):
    """0 for every caption; raises for the items of the last shard while the marker file exists."""
    if os.path.exists(os.environ["CAPRL_TEST_MARKER"]) and any(s in str(m) for m in images or [] for s in ("scene_00004", "scene_00005")):
        raise RuntimeError("quality service down")
    return [0.0] * len(completions)
'''


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("select")
    scenes = write_scenes(root / "images", 6, seed=3)
    return curate_import(root, scene_rows(scenes)) / "train.parquet"


def config(base_url: str, train: Path, out: Path, **extra) -> AnnotateConfig:
    """The select run's config, validated as ``caprl annotate -c`` does (refusals are ConfigErrors)."""
    data = {
        "input": {"path": str(train), "path_column": "images", "carry_columns": ["reward_model"]},
        "backend": {"name": "openai", "model": "scripted", "openai": {"base_url": base_url},
                    "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 64}},
        "select": {"reward": {"components": [{"name": "qa_accuracy"}],
                              "qa": {"mode": "all_qa", "answerer": {"name": "lexical"}}}},
        "sharding": {"shard_size": 2},
        "output_dir": str(out),
    }
    return validate(AnnotateConfig, deep_merge(data, extra))


def rows_of(folder: Path) -> list[dict]:
    return pl.read_parquet(str(folder / "*.parquet")).sort("key").to_dicts()


def test_best_of_four_keeps_the_best_scored_caption(curated: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ChatServer(choices=scripted) as server:
        report = run(config(server.base_url, curated, out))
        # the CLI runs the same two stages and resumes both: nothing is redone
        cfg_file = _write(tmp_path, config(server.base_url, curated, out))
        again = CliRunner().invoke(app, ["annotate", "-c", str(cfg_file)])
    assert again.exit_code == 0, again.output
    assert len(server.bodies) == 6  # one request of n=4 per image, none on the rerun
    rows, candidates = rows_of(out), rows_of(out / "candidates")
    assert len(rows) == len(candidates) == 6 and report.n_items == 6
    assert [r["key"] for r in rows] == [c["key"] for c in candidates]
    reward = CaprlReward(RewardConfig(components=[{"name": "qa_accuracy"}],
                                      qa={"mode": "all_qa", "answerer": {"name": "lexical"}}))
    for row, cand in zip(rows, candidates):
        assert row["status"] == "ok" and row["captions"] == cand["captions"] and len(row["captions"]) == 4
        q = row["quality"]
        assert q["by"] == "1.0 x qa_accuracy" and len(q["scores"]) == len(q["terms"]) == 4
        # the scores are the QA reward of each candidate on the image's own questions, the kept one the best
        gt = row["reward_model"]["ground_truth"]
        assert q["scores"] == pytest.approx(reward(row["captions"], ground_truth=[gt] * 4))
        assert q["chosen"] == q["scores"].index(max(q["scores"])) and row["caption"] == row["captions"][q["chosen"]]
        assert q["names"] == ["qa_reward"] and [t[0] for t in q["terms"]] == pytest.approx(q["scores"])
    chosen = sum(max(r["quality"]["scores"]) for r in rows) / 6
    mean = sum(sum(r["quality"]["scores"]) / 4 for r in rows) / 6
    assert report.metrics["select_chosen_mean"] == pytest.approx(chosen)
    assert report.metrics["select_candidates_mean"] == pytest.approx(mean)
    assert chosen > mean
    assert rows_of(out) == rows


def _write(tmp_path: Path, cfg: AnnotateConfig) -> Path:
    path = tmp_path / "select.json"
    path.write_text(json.dumps(cfg.model_dump(mode="json", exclude_none=True)))
    return path


def test_a_run_stopped_in_the_select_stage_resumes_with_every_item_once(curated: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    marker = tmp_path / "down"
    marker.write_text("")
    monkeypatch.setenv("CAPRL_TEST_MARKER", str(marker))
    out = tmp_path / "out"
    server = ChatServer(choices=scripted).__enter__()
    cfg = config(server.base_url, curated, out, select={"reward": {"components": [
        {"name": "qa_accuracy"}, {"name": f"file:{tmp_path / 'flaky.py'}:flaky", "weight": 0.5}]}})
    with pytest.raises(CaprlError, match="quality service down"):
        run(cfg)
    server.__exit__(None, None, None)  # the captioner is gone: a resume must not need it
    assert len(list((out / "candidates").glob("*.parquet"))) == 3  # every candidate sampled
    assert sorted(p.name for p in out.glob("*.parquet")) == ["00000.parquet", "00001.parquet"]  # shard 2 not
    sampled = {p.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("0*")}
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("0000[01]*")}
    marker.unlink()
    report = run(cfg)
    assert report.shards_done == 1 and report.shards_skipped == 2
    rows = rows_of(out)
    assert [r["key"] for r in rows] == sorted({r["key"] for r in rows}) and len(rows) == 6
    names = [r["quality"]["names"] for r in rows]
    assert all(n[0] == "qa_reward" and n[1].endswith(":flaky_reward") and len(n) == 2 for n in names)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("0*")} == sampled  # nothing resampled
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("0000[01]*")} == kept  # finished shards kept


def test_an_item_without_questions_is_a_status_row(curated: Path, tmp_path: Path) -> None:
    rows = pl.read_parquet(curated).to_dicts()
    rows[1]["reward_model"] = {**rows[1]["reward_model"], "ground_truth": []}
    bad = tmp_path / "bad.parquet"
    pl.DataFrame(rows).write_parquet(bad)
    out = tmp_path / "out"
    with ChatServer(choices=scripted) as server:
        report = run(config(server.base_url, bad, out))
    got = {r["key"]: r for r in rows_of(out)}
    failed = [r for r in got.values() if r["status"] == "select_failed"]
    assert len(failed) == 1 and "no questions in select.qa_column" in failed[0]["error_message"]
    assert failed[0]["quality"] is None and len(failed[0]["captions"]) == 4  # its captions are kept
    assert report.status_counts == {"ok": 5, "select_failed": 1}


@pytest.mark.parametrize("extra, key, hint", [
    ({"backend": {"sampling": {"n": 1}}}, "select", "backend.sampling.n"),
    ({"input": {"carry_columns": []}}, "select.qa_column", "add reward_model to input.carry_columns"),
])
def test_select_is_refused_where_it_cannot_work(curated: Path, tmp_path: Path, extra: dict, key: str,
                                               hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        config("http://127.0.0.1:9/v1", curated, tmp_path / "o", **extra)
    issue = next(i for i in info.value.issues if i.path == key)
    assert hint in issue.render()
