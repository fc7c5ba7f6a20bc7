"""Bad inputs per verb, through the real CLI (issue 17): each case asserts the exit code, a message naming the
path or key without a traceback, and the state left on disk: nothing deleted, nothing half-made, and the fixed
rerun works. Real tiny models (the transformers captioner) and the lexical answerer, on two or three tiny images.

The startup checks (missing/corrupt models, bad config values, malformed files) are in test_startup_errors.py;
this file covers what a run leaves behind: claimed outputs, failed engines, corrupt run files, resume refusals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from chat_server import ChatServer
from cli_cases import cli, write_yaml
from media_factory import make_image_bytes
from vllm_server import free_port
VERBS = ("annotate", "curate", "eval", "train")


# --------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder a user owns (no caprl run): text, binary and hidden files, one nested. Returns its snapshot."""
    (path / "data").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes: do not delete\n")
    (path / "data" / "raw.bin").write_bytes(bytes(range(256)) * 4)
    (path / ".hidden").write_text("x")
    return snapshot(path)


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("bad-inputs")
    images = root / "images"
    images.mkdir()
    (images / "a.png").write_bytes(make_image_bytes(color=(255, 0, 0)))
    (images / "b.png").write_bytes(make_image_bytes(color=(0, 0, 255)))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    (root / "m.jsonl").write_text(
        json.dumps({"path": "images/a.png", "caption": "A red square in the middle.",
                    "qa": [{"question": "What color is the square?", "choices": ["A) red", "B) blue"],
                            "answer": "A"}]}) + "\n"
        + json.dumps({"path": "images/b.png", "caption": "A blue square in the middle.",
                      "qa": [{"question": "What color is the square?", "choices": ["A) red", "B) blue"],
                              "answer": "B"}]}) + "\n")
    question = {"question": "What color is the square?", "options": ["red", "blue"], "answer": "A"}
    (root / "bench.jsonl").write_text(json.dumps({"image": "images/a.png", **question}) + "\n")
    (root / "bench_corrupt.jsonl").write_text(json.dumps({"image": "images/a.png", **question}) + "\n"
                                              + json.dumps({"image": "corrupt.png", **question}) + "\n")
    (root / "bench_empty.jsonl").write_text("")
    (root / "bench_null.jsonl").write_text(json.dumps({"image": "images/a.png", **question, "answer": None}) + "\n")
    qa = [{"question": "What color?", "choices": ["A) red", "B) blue"], "answer": "A"}]
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "<image> Describe."}]],
                             "images": [["images/a.png"]],
                             "reward_model": [{"style": "rule", "ground_truth": qa}]}), root / "train.parquet")
    cap = tiny_models["captioner"]
    configs = {
        "annotate": write_yaml(root / "annotate.yaml", f"""
            kind: annotate
            input: {{path: {images}}}
            backend: {{name: transformers, model: {cap}, sampling: {{max_tokens: 2, seed: 0}}}}
            sharding: {{shard_size: 1}}
        """),
        "curate": write_yaml(root / "curate.yaml", f"""
            kind: curate
            input: {{path: {root / 'm.jsonl'}}}
            import_mode: qa
            answer: {{backend: {{name: lexical}}, evidence: caption}}
            export: {{val_fraction: 0.0}}
            sharding: {{shard_size: 1}}
        """),
        "eval": write_yaml(root / "eval.yaml", f"""
            kind: eval
            benchmarks: [{{name: b, path: {root / 'bench.jsonl'}}}]
            captioner: {{name: transformers, model: {cap}, sampling: {{n: 1, max_tokens: 2, seed: 0}}}}
            answerer: {{name: lexical}}
            sharding: {{shard_size: 2}}
        """),
        "train": write_yaml(root / "train.yaml", f"""
            kind: train
            policy: {cap}
            data: {{train_files: [{root / 'train.parquet'}]}}
            trl: {{report_to: []}}
        """),
    }
    # a finished annotate run (2 items, 2 shards) that the resume / corruption cases copy
    finished = root / "finished"
    cli(["annotate", "-c", configs["annotate"], "-o", finished], 0)
    assert sorted(p.name for p in finished.glob("*_stats.json")) == ["00000_stats.json", "00001_stats.json"]
    return {"root": root, "cap": cap, "cfg": configs, "finished": finished}


def verb(e: dict[str, Any], name: str, out: Path, *extra: Any) -> list[Any]:
    return [name, "--config", e["cfg"][name], "--output", out, *extra]


def finished_copy(e: dict[str, Any], dest: Path) -> Path:
    """The finished annotate run, as if it had been run with ``--output dest``."""
    shutil.copytree(e["finished"], dest)
    resolved = dest / "config.resolved.yaml"
    resolved.write_text(resolved.read_text().replace(str(e["finished"]), str(dest)))
    return dest


# --------------------------------------------------------------------------- A. data loss


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "resume"])
@pytest.mark.parametrize("name", VERBS)
def test_output_folder_of_user_files_is_refused_and_kept(name: str, overwrite: bool, env, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    before = user_folder(out)
    what = "--overwrite refused" if overwrite else "output refused"
    cli(verb(env, name, out, *(["--overwrite"] if overwrite else [])), 2,
        what, str(out), "is not a caprl run", "notes.txt", "Nothing was deleted")
    assert snapshot(out) == before  # every user file still there, same bytes; no marker, no shard written


@pytest.mark.parametrize("name", VERBS)
def test_output_that_is_a_file_is_refused(name: str, env, tmp_path: Path) -> None:
    out = tmp_path / "results.txt"
    out.write_bytes(b"a file the user owns\n")
    cli(verb(env, name, out, "--overwrite"), 2, str(out), "is a file, not a folder")
    assert out.read_bytes() == b"a file the user owns\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_overwrite_replaces_a_previous_annotate_run(env, tmp_path: Path) -> None:
    out = finished_copy(env, tmp_path / "run")
    (out / "00001.parquet").unlink()  # the old run is changed: the new one must not keep any of it
    (out / "00001_stats.json").unlink()
    (out / "leftover.txt").write_text("written into the old run")
    old = snapshot(out)
    cli(verb(env, "annotate", out, "--overwrite", "backend.sampling.max_tokens=3"), 0, "2 / 0")
    new = snapshot(out)
    assert "leftover.txt" not in new and old["00000_stats.json"] != new["00000_stats.json"]
    assert {"00000.parquet", "00001.parquet", "00000_stats.json", "00001_stats.json", "caprl_run.json"} <= set(new)
    assert json.loads(new["run_manifest.json"])["n_shards"] == 2


def test_empty_existing_folder_is_accepted(env, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    cli(verb(env, "annotate", out), 0, "2 / 0")
    assert json.loads((out / "caprl_run.json").read_text())["command"] == "annotate"
    assert (out / "00001_stats.json").is_file()


def test_overwrite_keeps_a_user_folder_that_holds_a_run_below(env, tmp_path: Path) -> None:
    out = tmp_path / "project"
    user_folder(out)
    shutil.copytree(env["finished"], out / "runs" / "old")
    before = snapshot(out)
    cli(verb(env, "annotate", out, "--overwrite"), 2, str(out), "is not a caprl run")
    assert snapshot(out) == before


def test_overwrite_keeps_a_user_folder_with_a_metrics_file(env, tmp_path: Path) -> None:
    out = tmp_path / "experiment"
    user_folder(out)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    before = snapshot(out)
    cli(verb(env, "annotate", out, "--overwrite"), 2, str(out), "is not a caprl run")
    assert snapshot(out) == before


# --------------------------------------------------------------------------- B. wrong numbers


def test_eval_unreadable_image_counts_as_failed(env, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    result = cli(verb(env, "eval", out, f"benchmarks=[{{name: b, path: {env['root'] / 'bench_corrupt.jsonl'}}}]"),
                 0, "no_caption")
    row = next(line for line in result.output.splitlines() if line.strip(" │|").startswith("failed"))
    assert int(row.strip(" │|").split()[-1].strip("│|")) >= 1, row  # the summary's failed count, not 0
    task = json.loads((out / "results_latest.json").read_text())["tasks"]["b"]
    assert task["n_failed"] >= 1 and task["n_samples"] == 1 and task["failed"] == {"no_caption": 1}
    samples = [json.loads(x) for f in out.glob("samples_b_*.jsonl") for x in f.read_text().splitlines()]
    bad = [s for s in samples if s["status"] != "ok"]
    assert len(samples) == 2 and len(bad) == 1
    assert bad[0]["status"] == "no_caption" and bad[0]["score"] is None and "corrupt.png" in bad[0]["error_message"]


def test_eval_empty_benchmark_is_refused(env, tmp_path: Path) -> None:
    path = env["root"] / "bench_empty.jsonl"
    out = tmp_path / "ev"
    cli(verb(env, "eval", out, f"benchmarks=[{{name: b, path: {path}}}]"), 2, str(path))
    assert not out.exists()  # nothing scored, nothing written


def test_eval_null_answer_is_refused(env, tmp_path: Path) -> None:
    path = env["root"] / "bench_null.jsonl"
    out = tmp_path / "ev"
    cli(verb(env, "eval", out, f"benchmarks=[{{name: b, path: {path}}}]"), 2, str(path), "row 0", "answer")
    assert not out.exists()


def test_curate_generator_down_commits_nothing_and_the_rerun_works(env, tmp_path: Path) -> None:
    out = tmp_path / "cur"
    gen = ["import_mode=none", "generate.backend.name=openai", "generate.backend.model=gen",
           "generate.backend.openai.max_retries=0", "generate.backend.openai.timeout_s=5"]
    cli(verb(env, "curate", out, *gen, f"generate.backend.openai.base_url=http://127.0.0.1:{free_port()}/v1"), 2,
        "generate with openai", "failed (retries_exhausted", "the run stopped with shard(s)", "uncommitted", "rerun")
    assert not list(out.glob("generate/*_stats.json")) and not list(out.glob("generate/*.parquet"))
    assert not (out / "parse").exists() and not (out / "dataset").exists()
    with ChatServer() as server:  # the engine is up now: the same output, no --overwrite
        cli(verb(env, "curate", out, *gen, f"generate.backend.openai.base_url={server.base_url}"), 0, "summary")
    assert len(server.bodies) == 2
    assert sorted(p.name for p in out.glob("generate/*_stats.json")) == ["00000_stats.json", "00001_stats.json"]
    assert (out / "dataset" / "funnel.json").is_file()


def test_annotate_engine_down_commits_nothing_and_the_rerun_works(env, tmp_path: Path) -> None:
    out = tmp_path / "ann"
    down = ["backend.name=openai", "backend.openai.max_retries=0", "backend.openai.timeout_s=5",
            f"backend.openai.base_url=http://127.0.0.1:{free_port()}/v1"]
    cli(verb(env, "annotate", out, *down), 2, "annotate with openai", "failed (retries_exhausted",
        "the run stopped with shard(s)", "uncommitted")
    assert not list(out.glob("*_stats.json")) and not list(out.glob("*.parquet"))
    cli(verb(env, "annotate", out), 0, "2 / 0")  # the fixed command (local model), no --overwrite
    assert sorted(p.name for p in out.glob("*_stats.json")) == ["00000_stats.json", "00001_stats.json"]


def test_error_message_keeps_names_that_look_like_emoji_codes(env, tmp_path: Path) -> None:
    cli(verb(env, "curate", tmp_path / "cur", "import_mode=none", "generate.backend.name=openai",
             "generate.backend.model=llama", "generate.backend.openai.max_retries=0",
             f"generate.backend.openai.base_url=http://127.0.0.1:{free_port()}/v1"), 2, "openai:llama:")


# --------------------------------------------------------------------------- C. failed start, fixed rerun


def test_annotate_missing_model_then_fixed_rerun(env, tmp_path: Path) -> None:
    out = tmp_path / "ann"
    missing = tmp_path / "no-such-model"
    cli(verb(env, "annotate", out, f"backend.model={missing}"), 2, "backend.model", str(missing), "does not exist")
    assert not out.exists()  # checked before the output was claimed
    cli(verb(env, "annotate", out), 0, "2 / 0")


def test_changed_config_after_a_finished_shard_is_refused(env, tmp_path: Path) -> None:
    out = finished_copy(env, tmp_path / "run")
    (out / "00001.parquet").unlink()  # shard 0 finished, shard 1 not
    (out / "00001_stats.json").unlink()
    before = snapshot(out)
    cli(verb(env, "annotate", out, "backend.sampling.max_tokens=3"), 2,
        str(out), "already holds a different run", "config changed (backend.sampling.max_tokens)", "--overwrite")
    assert snapshot(out) == before
    cli(verb(env, "annotate", out), 0, "1 / 1")  # the unchanged command resumes


# --------------------------------------------------------------------------- D. corrupt run files


def _truncate_manifest(run: Path) -> Path:
    path = run / "run_manifest.json"
    path.write_bytes(path.read_bytes()[:40])
    return path


def _garbage_stats(run: Path) -> Path:
    path = run / "00000_stats.json"
    path.write_text("garbage {{{")
    return path


CORRUPT: dict[str, Callable[[Path], Path]] = {"truncated-manifest": _truncate_manifest,
                                              "garbage-stats": _garbage_stats}


@pytest.mark.parametrize("how", ["rerun", "status"])
@pytest.mark.parametrize("damage", list(CORRUPT))
def test_corrupt_run_file_is_named_and_the_advice_works(damage: str, how: str, env, tmp_path: Path) -> None:
    out = finished_copy(env, tmp_path / "run")
    bad = CORRUPT[damage](out)
    before = snapshot(out)
    argv = verb(env, "annotate", out) if how == "rerun" else ["annotate", "status", out]
    cli(argv, 2, str(bad), "is corrupt", "Delete that file", "--overwrite")
    assert snapshot(out) == before  # nothing rewritten or removed by the refused command
    bad.unlink()  # the advice
    cli(verb(env, "annotate", out), 0, "1 / 1" if damage == "garbage-stats" else "0 / 2")
    cli(["annotate", "status", out], 0, "2 / 2")


# --------------------------------------------------------------------------- E. typed CLI


def test_output_named_like_a_number(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli(verb(env, "annotate", "2024"), 0, "2 / 0")
    assert (tmp_path / "2024" / "00001_stats.json").is_file()


def test_output_with_a_hash_and_a_space(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli(verb(env, "annotate", "runs/x #1"), 0, "2 / 0")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["x #1"]
    assert (tmp_path / "runs" / "x #1" / "00001_stats.json").is_file()


def test_log_file_in_a_missing_folder(env, tmp_path: Path) -> None:
    log = tmp_path / "nowhere" / "run.log"
    cli(verb(env, "annotate", tmp_path / "out", "--log-file", log), 2, "--log-file", str(log), "must exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_status_of_a_missing_folder(tmp_path: Path) -> None:
    cli(["annotate", "status", tmp_path / "nowhere"], 2, str(tmp_path / "nowhere"), "not a caprl run directory")
    assert not (tmp_path / "nowhere").exists()


def test_compare_without_dirs_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli(["eval", "compare"], 2, "Usage:", "Missing argument")
    assert list(tmp_path.iterdir()) == []  # no report.html


@pytest.mark.parametrize("argv,own", [
    (["train", "export", "--help"], "Export a verl FSDP checkpoint"),
    (["annotate", "status", "--help"], "Progress of a running or finished annotate job"),
    (["eval", "compare", "--help"], "Compare eval runs side by side"),
], ids=["train-export", "annotate-status", "eval-compare"])
def test_helper_commands_show_their_own_help(argv: list[str], own: str) -> None:
    result = cli(argv, 0, f"caprl {argv[0]} {argv[1]}", own)
    assert "--config" not in result.output  # not the verb's help


def test_serve_reward_dry_run_shows_host_and_port() -> None:
    result = cli(["serve-reward", "--config", "serve_reward/qa_image_qwen25_3b", "--dry-run", "--port", "18000",
                  "--host", "127.0.0.1", "qa.answerer.name=lexical"], 0)
    lines = result.output.splitlines()
    assert "host: 127.0.0.1" in lines and "port: 18000" in lines


# --------------------------------------------------------------------------- F. keys that do nothing


def test_serve_reward_refuses_answerer_sampling() -> None:
    cli(["serve-reward", "--config", "serve_reward/qa_image_qwen25_3b", "--dry-run", "qa.answerer.name=lexical",
         "qa.answerer.sampling.temperature=0.3"], 2, "qa.answerer.sampling", "is not used", "qa.sampling")


def test_train_refuses_judge_sampling(env, tmp_path: Path) -> None:
    cli(["train", "--config", env["cfg"]["train"], "--dry-run", "reward.vl_judge.judge.sampling.temperature=0.3"], 2,
        "reward.vl_judge.judge.sampling", "is not used", "vl_judge.sampling")


# --------------------------------------------------------------------------- G. unexpected exceptions


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("boom")


#: verb -> the library function that the verb calls first, replaced by one that raises
FAULTS = {"annotate": "caprl_kit.annotate.pipeline.fingerprint_items",
          "curate": "caprl_kit.curate.pipeline.fingerprint_items",
          "eval": "caprl_kit.evaluate.pipeline.load_benchmark"}


@pytest.mark.parametrize("name", list(FAULTS))
def test_unexpected_exception_is_one_line(name: str, env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FAULTS[name], _boom)
    out = tmp_path / "out"
    result = cli(verb(env, name, out), 1, "error: RuntimeError: boom (rerun with -vv for the traceback)")
    assert result.output.count("error:") == 1 and "File \"" not in result.output
    assert not out.exists()


def test_unexpected_exception_with_vv_shows_the_traceback(env, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FAULTS["annotate"], _boom)
    cli(verb(env, "annotate", tmp_path / "out", "-vv"), 1, "Traceback", "_boom", "RuntimeError: boom",
        traceback=True)


def test_interrupt_keeps_finished_shards(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit.annotate import pipeline

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    out = finished_copy(env, tmp_path / "run")
    before = snapshot(out)
    monkeypatch.setattr(pipeline, "summarize", interrupted)
    cli(verb(env, "annotate", out), 130, "interrupted", "rerun the same command to resume")
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.endswith((".parquet", "_stats.json"))} == \
        {k: v for k, v in before.items() if k.endswith((".parquet", "_stats.json"))}
