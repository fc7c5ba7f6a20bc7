"""Preference pairs from the QA reward (``caprl train pairs``) on the tiny captioner, DPO training on them with TRL
(steps, checkpoint, resume, export, validation selection), and GRPO scored through a real ``caprl serve-reward``
on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.errors import ConfigError, ResumeRefused
from caprl_kit.pairs.config import PairOptions, PairsConfig
from caprl_kit.pairs.pipeline import run as run_pairs
from caprl_kit.pairs.pipeline import select_pairs
from caprl_kit.schemas.pairs import PreferencePairRow, ScoredCaptionRow
from caprl_kit.synthetic import write_scenes
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run as run_train
from curated_sets import curate_import, scene_rows

runner = CliRunner()
N_IMAGES, N_SAMPLES = 8, 4


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    scenes = write_scenes(root / "images", N_IMAGES)
    curate_import(root, scene_rows(scenes), out="out", val_fraction=0.25)
    # a term that tells the random tiny captioner's samples apart (the lexical answerer alone scores them all 0)
    (root / "chars.py").write_text("def distinct_chars(completions, **kw):\n"
                                   "    return [len(set(c[-1]['content'] if isinstance(c, list) else c)) / 10 "
                                   "for c in completions]\n")
    return root


def pairs_data(tiny, curated: Path, out: Path, **extra) -> dict:
    data = {
        "data": {"path": str(curated / "out" / "dataset" / "train.parquet")},
        "captioner": {"name": "transformers", "model": str(tiny["captioner"]), "batch_size": 8,
                      "sampling": {"n": N_SAMPLES, "temperature": 1.0, "max_tokens": 8, "seed": 0}},
        "reward": {"qa": {"answerer": {"name": "lexical"}, "mode": "all_qa"},
                   "components": [{"name": "qa_accuracy"}, {"name": f"file:{curated / 'chars.py'}:distinct_chars"}]},
        # the random captioner never stops before its 8-token cap: every caption is "truncated"
        "pairs": {"min_margin": 0.1, "per_image": 2, "skip_flagged": []},
        "sharding": {"shard_size": 2},
        "output_dir": str(out),
    }
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return data


@pytest.fixture(scope="module")
def pairs_run(tiny_models, curated: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs-run") / "pairs"
    report = run_pairs(PairsConfig.model_validate(pairs_data(tiny_models, curated, out)))
    assert report.metrics["pairs"] > 0
    return out


def test_pairs_export_counts_margins_schema_and_datasets(pairs_run: Path, curated: Path) -> None:
    import datasets

    n_rows = pq.read_table(curated / "out" / "dataset" / "train.parquet").num_rows
    scored = [r for f in sorted((pairs_run / "scored").glob("0*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(scored) == n_rows * N_SAMPLES and all(r["status"] == "ok" for r in scored)
    assert pq.read_schema(sorted((pairs_run / "scored").glob("0*.parquet"))[0]).equals(
        ScoredCaptionRow.arrow_schema(), check_metadata=False)
    by_caption = {(r["id"], r["caption"]): r["score"] for r in scored}
    table = pq.read_table(pairs_run / "pairs.parquet")
    assert table.schema.equals(PreferencePairRow.arrow_schema(), check_metadata=False)
    pairs = table.to_pylist()
    summary = json.loads((pairs_run / "pairs_summary.json").read_text())
    assert summary["pairs"] == len(pairs) > 0 and summary["images"] == n_rows
    assert summary["captions_scored"] == n_rows * N_SAMPLES
    per_image: dict[str, int] = {}
    for p in pairs:
        per_image[p["id"]] = per_image.get(p["id"], 0) + 1
        assert p["margin"] >= 0.1 - 1e-9 and abs(p["chosen_score"] - p["rejected_score"] - p["margin"]) < 1e-9
        assert by_caption[(p["id"], p["chosen"][0]["content"])] == p["chosen_score"]
        assert by_caption[(p["id"], p["rejected"][0]["content"])] == p["rejected_score"]
        assert p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == "assistant"
        assert Path(p["images"][0]).is_file()
    assert max(per_image.values()) <= 2
    longer = [p["chosen_tokens"] > p["rejected_tokens"] for p in pairs]
    assert summary["chosen_longer_share"] == pytest.approx(sum(longer) / len(longer))
    # both files load with datasets as TRL reads them: messages are {role, content} dicts
    for kind, name in (("parquet", "pairs.parquet"), ("json", "pairs.jsonl")):
        ds = datasets.load_dataset(kind, data_files=[str(pairs_run / name)], split="train")
        assert len(ds) == len(pairs) and ds[0]["chosen"][0]["content"] == pairs[0]["chosen"][0]["content"]
        assert set(ds[0]["prompt"][0]) == {"role", "content"}


def test_pairs_resume_reselects_without_rescoring_and_refuses_a_changed_reward(tiny_models, curated: Path,
                                                                               pairs_run: Path) -> None:
    before = {f.name: f.stat().st_mtime_ns for f in (pairs_run / "scored").glob("*.parquet")}
    report = run_pairs(PairsConfig.model_validate(pairs_data(tiny_models, curated, pairs_run,
                                                             pairs={"min_margin": 0.0, "per_image": 1})))
    samples = list((pairs_run / "samples").glob("*_stats.json"))
    assert report.shards_skipped == len(samples) + len(before) and report.shards_done == 0, "both stages resumed"
    assert {f.name: f.stat().st_mtime_ns for f in (pairs_run / "scored").glob("*.parquet")} == before
    one_each = json.loads((pairs_run / "pairs_summary.json").read_text())
    assert one_each["pairs"] <= one_each["images"] and one_each["options"]["per_image"] == 1
    changed = pairs_data(tiny_models, curated, pairs_run)
    changed["reward"]["qa"]["mode"] = "shuffle"
    with pytest.raises(ResumeRefused) as err:
        run_pairs(PairsConfig.model_validate(changed))
    assert "reward.qa.mode" in str(err.value)
    # the pairs of the module's run are put back for the DPO tests
    run_pairs(PairsConfig.model_validate(pairs_data(tiny_models, curated, pairs_run)))


def _row(i: int, score: float, tokens: int, flags: list[str] | None = None, status: str = "ok") -> dict:
    return {"id": "x", "caption_index": i, "caption": "w " * tokens, "score": score, "completion_tokens": tokens,
            "caption_flags": flags or [], "status": status}


def test_select_pairs_margin_per_image_length_ratio_and_flags() -> None:
    rows = [_row(0, 1.0, 10), _row(1, 0.0, 10), _row(2, 0.5, 30), _row(3, 0.0, 31)]
    pairs, why = select_pairs(rows, PairOptions(min_margin=0.2, per_image=2))
    assert why is None and [(a["caption_index"], b["caption_index"]) for a, b in pairs] == [(0, 1), (2, 3)]
    # length control: 10 vs 30 tokens never pair at ratio 1.5; equal-length pairs still do
    pairs, _ = select_pairs(rows, PairOptions(min_margin=0.2, per_image=4, max_length_ratio=1.5))
    assert all(max(a["completion_tokens"], b["completion_tokens"]) <= 1.5 * min(a["completion_tokens"],
               b["completion_tokens"]) for a, b in pairs) and len(pairs) == 2
    assert select_pairs([_row(0, 1.0, 10), _row(1, 0.0, 40)], PairOptions(max_length_ratio=1.5)) == ([], "length")
    assert select_pairs([_row(0, 0.5, 5), _row(1, 0.5, 5)], PairOptions()) == ([], "no_margin")
    assert select_pairs([_row(0, 1.0, 5, ["truncated"]), _row(1, 0.0, 5)], PairOptions()) == ([], "flagged")
    assert select_pairs([_row(0, 1.0, 5), _row(1, 0.0, 5, status="reward_failed")], PairOptions()) == ([], "failed")


def test_pairs_config_refuses_greedy_or_single_samples() -> None:
    base = {"data": {"path": "x.parquet"}, "captioner": {"name": "transformers", "model": "m"}}
    for sampling, key in (({"n": 1}, "captioner.sampling.n"), ({"n": 4, "temperature": 0.0},
                                                               "captioner.sampling.temperature")):
        with pytest.raises(ConfigError) as err:
            from caprl_kit.config import validate

            validate(PairsConfig, {**base, "captioner": {**base["captioner"], "sampling": sampling}})
        assert key in str(err.value)


def test_pairs_cli_dry_run_and_run(tiny_models, curated: Path, tmp_path: Path) -> None:
    data = pairs_data(tiny_models, curated, tmp_path / "unused")
    del data["output_dir"]
    recipe = tmp_path / "pairs.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "pairs", **data}))
    dry = runner.invoke(app, ["train", "pairs", "--config", str(recipe), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "sample 4 captions per image" in dry.output and "margin >= 0.1" in dry.output
    out = tmp_path / "cli"
    result = runner.invoke(app, ["train", "pairs", "--config", str(recipe), "--output", str(out),
                                 "data.limit=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "pairs_summary.json").read_text())["images"] == 2
    missing = runner.invoke(app, ["train", "pairs", "--config", str(recipe), "--output", str(tmp_path / "m"),
                                  f"data.path={tmp_path / 'nope.parquet'}"])
    assert missing.exit_code == 2 and "data.path" in missing.output and "Traceback" not in missing.output


def dpo_cfg(tiny, curated: Path, pairs_run: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "method": "dpo", "policy": str(tiny["captioner"]),
        "data": {"train_files": [str(pairs_run / "pairs.parquet")],
                 "val_files": [str(curated / "out" / "dataset" / "val.parquet")], "max_response_length": 8},
        "reward": {"qa": {"answerer": {"name": "lexical"}}},
        "algorithm": {"max_steps": steps, "save_steps": 1, "eval_steps": 1, "lr": 5e-3},
        "dpo": {"per_device_batch_size": 2, "beta": 0.1},
        "trl": {"report_to": []}, "output_dir": str(out)})


def test_dpo_trains_saves_resumes_selects_and_exports(tiny_models, curated: Path, pairs_run: Path,
                                                       tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request
    from caprl_kit.backends.config import BackendConfig

    out = tmp_path / "dpo"
    report = run_train(dpo_cfg(tiny_models, curated, pairs_run, out, steps=2))
    assert report.metrics["steps"] == 2.0 and report.metrics["pairs"] > 0
    assert (out / "checkpoint-2").is_dir() and (out / "final" / "config.json").is_file()
    assert (out / "best" / "config.json").is_file() and "best_val_qa_accuracy" in report.metrics
    before = load_file(str(Path(tiny_models["captioner"]) / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after), "DPO steps must move weights"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in m for m in metrics) and any("val/qa_accuracy" in m for m in metrics)
    resumed = run_train(dpo_cfg(tiny_models, curated, pairs_run, out, steps=3))
    assert resumed.metrics["steps"] == 3.0 and any("resumed" in n for n in resumed.notes)
    backend = build_backend(BackendConfig(name="transformers", model=str(out / "final"), sampling={"max_tokens": 6}))
    (resp,) = backend.generate([Request.user("Please describe this image in detail.",
                                             images=[curated / "images" / "scene_00000.png"])])
    assert resp.ok


def test_dpo_refuses_a_curated_file_as_pairs(tiny_models, curated: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({
        "method": "dpo", "policy": str(tiny_models["captioner"]),
        "data": {"train_files": [str(curated / "out" / "dataset" / "train.parquet")]}, "output_dir": str(tmp_path)})
    with pytest.raises(Exception) as err:
        run_train(cfg)
    assert "pairs file" in str(err.value) and "chosen" in str(err.value)


def test_grpo_scored_through_a_real_reward_server(tiny_models, curated: Path, tmp_path: Path) -> None:
    import httpx

    from caprl_kit.rewards.server import RewardServerConfig
    from caprl_kit.rewards.server_app import create_app
    from uvicorn_thread import serve

    server = RewardServerConfig.model_validate({"qa": {"mode": "all_qa", "answerer": {"name": "lexical"}}})
    out = tmp_path / "grpo-http"
    with serve(create_app(server)) as url:
        cfg = TrainConfig.model_validate({
            "policy": str(tiny_models["captioner"]),
            "data": {"train_files": [str(curated / "out" / "dataset" / "train.parquet")], "max_response_length": 8},
            "reward": {"qa": {"service": {"urls": [url], "max_captions_per_request": 3}},
                       "components": [{"name": "qa_accuracy"},
                                      {"name": f"file:{curated / 'chars.py'}:distinct_chars"}]},
            "algorithm": {"num_generations": 4, "max_steps": 2, "save_steps": 2, "lr": 5e-3, "kl_coef": 0.0},
            "trl": {"per_device_batch_size": 4, "report_to": []}, "output_dir": str(out)})
        report = run_train(cfg)
        served = httpx.get(f"{url}/metrics").text
    assert report.metrics["steps"] == 2.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "reward_service/latency_s" in m]
    assert logged and all(m["reward_service/latency_s"] > 0 and m["reward_service/captions_per_s"] > 0
                          for m in logged)
    # every completion of both steps went through the server (2 steps x 4 completions)
    counted = [line for line in served.splitlines() if line.startswith("caprl_reward_captions_total")]
    assert counted and float(counted[0].split()[-1]) >= 8


def test_demo_reward_server_is_a_real_process_on_loopback(tmp_path: Path) -> None:
    """The demo's GRPO-over-HTTP row talks to `caprl serve-reward` started as its own process on 127.0.0.1."""
    import httpx

    from caprl_kit.demo import reward_server

    with reward_server(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        qa = {"question": "What color is the circle?", "choices": ["A) red", "B) blue", "C) green", "D) yellow"],
              "answer": "A"}
        body = {"captions": ["A red circle at the left.", "A shape at the left."], "ground_truth": [[qa], [qa]]}
        r = httpx.post(f"{url}/v1/reward", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["rewards"] == [1.0, 0.0]
    with pytest.raises(httpx.HTTPError):  # stopped on exit
        httpx.get(f"{url}/health", timeout=2)


def test_a_bad_qa_list_fails_its_item_and_a_dead_reward_service_commits_nothing(tiny_models, curated: Path,
                                                                                 tmp_path: Path) -> None:
    rows = pq.read_table(curated / "out" / "dataset" / "train.parquet").to_pylist()[:4]
    rows[1]["reward_model"] = {**rows[1]["reward_model"], "ground_truth": "not json"}
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "one-bad"
    cfg = pairs_data(tiny_models, curated, out, data={"path": str(data)})
    report = run_pairs(PairsConfig.model_validate(cfg))
    scored = [r for f in sorted((out / "scored").glob("0*.parquet")) for r in pq.read_table(f).to_pylist()]
    failed = [r for r in scored if r["status"] == "reward_failed"]
    assert {r["row"] for r in failed} == {1} and len(failed) == N_SAMPLES and "JSON" in failed[0]["error_message"]
    assert sum(r["status"] == "ok" for r in scored) == 3 * N_SAMPLES and report.n_failed == 1
    # no reward server answers: the shard is not committed as done (a rerun scores it), one clear error
    dead = pairs_data(tiny_models, curated, tmp_path / "dead", data={"path": str(data)})
    dead["reward"]["qa"] = {"service": {"urls": ["http://127.0.0.1:9"], "timeout_s": 2}}
    with pytest.raises(Exception) as err:
        run_pairs(PairsConfig.model_validate(dead))
    assert "every reward server failed" in str(err.value)
    assert not list((tmp_path / "dead" / "scored").glob("*_stats.json"))


def test_service_settings_that_would_be_ignored_are_refused() -> None:
    from caprl_kit.config import validate
    from caprl_kit.rewards.server import RewardServerConfig

    service = {"urls": ["http://127.0.0.1:18889"]}
    with pytest.raises(ConfigError) as err:
        validate(PairsConfig, {"data": {"path": "x.parquet"}, "captioner": {"model": "m"},
                               "reward": {"qa": {"mode": "all_qa", "service": service}}})
    assert "reward.qa.mode" in str(err.value) and "server's own qa config" in str(err.value)
    with pytest.raises(ConfigError, match="qa.service"):
        validate(RewardServerConfig, {"qa": {"service": service}})
    with pytest.raises(ConfigError, match="verl.reward_urls"):
        validate(TrainConfig, {"trainer": "verl", "policy": "p", "data": {"train_files": ["a"], "val_files": ["b"]},
                               "reward": {"qa": {"service": service}}})


def test_remote_scorer_scores_an_empty_qa_list_zero_like_in_process() -> None:
    from caprl_kit.rewards.client import RemoteQAScorer
    from caprl_kit.rewards.config import RewardServiceConfig
    from caprl_kit.rewards.server import RewardServerConfig
    from caprl_kit.rewards.server_app import create_app
    from caprl_kit.schemas.curate import MCQ
    from uvicorn_thread import serve

    qa = MCQ(question="What color is the circle?", choices=["A) red", "B) blue"], answer="A")
    with serve(create_app(RewardServerConfig.model_validate({"qa": {"mode": "all_qa"}}))) as url:
        out = RemoteQAScorer(RewardServiceConfig(urls=[url])).score(["A red circle.", "A red circle."], [[qa], []])
    assert out.scores == [1.0, 0.0]
