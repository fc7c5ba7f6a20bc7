"""Issue 23, through the real CLI: every command that writes claims its output (a user's files, also in a sub-folder
the command would create, survive with and without --overwrite, and the refusal comes before any work), the
refusal advice never makes a user folder deletable, an input that yields nothing stops before anything is written,
the numbers in eval's summary and in `eval compare` mean what they say, and `caprl train export` runs under
caprl's interpreter and reports a failed merge in one message."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_cases import cli, flat, write_yaml

from caprl_kit.schemas.layout import OUTPUT_LOCK, RUN_MARKER

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bad-input tables' env and helpers (importlib mode)
import test_bad_inputs as bad_inputs
from test_bad_inputs import snapshot, verb

bad_env = bad_inputs.env  # that module's fixture (configs, tiny images, a finished annotate run), here as bad_env

SMALL_DEMO = ["--n-train", 4, "--n-val", 2, "--n-test", 2, "--sft-steps", 1, "--rl-steps", 1, "--eval-steps", 1,
              "--no-trainers"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def extra(bad_env: dict[str, Any]) -> dict[str, Any]:
    """What the helper commands need beside the verbs' configs: a pairs recipe, a verl checkpoint that looks
    complete (its weights are not), and two eval result folders over different task sets."""
    root = bad_env["root"]
    pairs = write_yaml(root / "pairs.yaml", f"""
        kind: pairs
        data: {{path: {root / 'train.parquet'}}}
        captioner: {{name: transformers, model: {bad_env['cap']}, sampling: {{n: 2, temperature: 1.0, max_tokens: 2}}}}
        reward: {{qa: {{answerer: {{name: lexical}}, mode: all_qa}}}}
        sharding: {{shard_size: 1}}
    """)
    ckpt = root / "checkpoints" / "global_step_3"
    actor = ckpt / "actor"
    (actor / "huggingface").mkdir(parents=True)
    shutil.copy(Path(bad_env["cap"]) / "config.json", actor / "huggingface" / "config.json")
    (actor / "fsdp_config.json").write_text(json.dumps({"world_size": 1}))
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"garbage, not a torch file\n")
    runs = {}
    for name, tasks in (("run_a", {"chartqa": 0.5, "docvqa": 1.0}), ("run_b", {"chartqa": 0.7})):
        d = root / "compare" / name
        d.mkdir(parents=True)
        body = {"captioner": name, "answerer": "lexical", "compat": "fixed", "created_at": "2026-01-01T00:00:00+00:00",
                "tasks": {t: {"metric": "accuracy", "m_acc": v, "bon": v, "n_samples": 2} for t, v in tasks.items()},
                "average": sum(tasks.values()) / len(tasks)}
        (d / "results_latest.json").write_text(json.dumps(body))
        runs[name] = d
    return {"pairs": pairs, "checkpoint": ckpt, "runs": runs}


# --------------------------------------------------------------------------- 1. every command claims its output


def _argv(name: str, e: dict[str, Any], x: dict[str, Any], out: Path) -> list[Any]:
    if name == "demo":
        return ["demo", "--out", out, *SMALL_DEMO]
    if name == "models tiny":
        return ["models", "tiny", "--out", out]
    if name == "data synth":
        return ["data", "synth", "--out", out, "--train", 2, "--val", 1, "--test", 1]
    if name == "train export":
        return ["train", "export", x["checkpoint"], "--output", out]
    if name == "train pairs":
        return ["train", "pairs", "--config", x["pairs"], "--output", out]
    return verb(e, name, out)


#: command -> the sub-folders it creates in its output (a user file there must survive too), and --overwrite
COMMANDS = {
    "demo": (("models", "data", "train"), True),
    "models tiny": (("captioner",), False),
    "data synth": (("train",), False),
    "train export": ((), False),
    "annotate": ((), True),
    "curate": (("dataset",), True),
    "eval": (("captions",), True),
    "train": (("sft",), True),
    "train pairs": (("samples",), True),
}
CASES = [(name, where, ow) for name, (subs, can) in COMMANDS.items() for where in ("", *subs)
         for ow in ((False, True) if can else (False,))]


@pytest.mark.parametrize(("name", "where", "overwrite"), CASES,
                         ids=[f"{n.replace(' ', '-')}-{w or 'root'}{'-overwrite' if o else ''}" for n, w, o in CASES])
def test_every_writing_command_keeps_a_user_folder(name: str, where: str, overwrite: bool, bad_env, extra,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caprl_kit.models import tiny

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the demo started work before claiming its output")

    if name == "demo":  # the refusal must come before any work: a full demo run is not what this checks
        monkeypatch.setattr(tiny, "build_tiny_models", no_work)
    out = tmp_path / "mine"
    (out / where).mkdir(parents=True)
    (out / where / "notes.txt").write_text("my notes: do not delete\n")
    (out / where / "raw.bin").write_bytes(bytes(range(256)))
    before = snapshot(out)
    argv = _argv(name, bad_env, extra, out) + (["--overwrite"] if overwrite else [])
    result = cli(argv, 2, str(out), "is not a caprl run", "Nothing was deleted")
    assert snapshot(out) == before, "the user's files were changed"
    assert not (out / RUN_MARKER).exists() and not (out / OUTPUT_LOCK).exists()
    assert "add an empty" not in result.output  # a user folder is never advised into a deletable one


def test_helper_commands_use_a_new_folder_and_their_own_and_refuse_each_others(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    cli(["models", "tiny", "--out", models], 0, "captioner")
    assert json.loads((models / RUN_MARKER).read_text())["command"] == "models tiny"
    assert not (models / OUTPUT_LOCK).exists()
    (models / "notes.txt").write_text("added to my own run")  # a folder this command made: used again, kept
    cli(["models", "tiny", "--out", models], 0, "answerer")
    assert (models / "notes.txt").read_text() == "added to my own run" and not (models / OUTPUT_LOCK).exists()

    cli(["data", "synth", "--out", data, "--train", 2, "--val", 1, "--test", 1], 0, "manifest.jsonl")
    assert json.loads((data / RUN_MARKER).read_text())["command"] == "data synth"
    cli(["data", "synth", "--out", data, "--train", 3, "--val", 1, "--test", 1], 0)  # its own previous run
    assert len((data / "train" / "manifest.jsonl").read_text().splitlines()) == 3
    assert not (data / OUTPUT_LOCK).exists()

    before = snapshot(models)
    cli(["data", "synth", "--out", models], 2, str(models), "models tiny")  # another command's run: not ours
    assert snapshot(models) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    cli(["data", "synth", "--out", empty, "--train", 1, "--val", 1, "--test", 1], 0)  # an empty folder is fine

    project = tmp_path / "project"  # `--out .` inside a project
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\n")
    monkeypatch.chdir(project)
    cli(["data", "synth", "--out", "."], 2, "is not a caprl run", "pyproject.toml")
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml"]


@pytest.mark.slow
def test_demo_claims_a_new_folder_resumes_its_own_and_refuses_another_commands(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cli(["demo", "--out", out, *SMALL_DEMO], 0, "report.html")
    assert json.loads((out / RUN_MARKER).read_text())["command"] == "demo"
    assert not list(tmp_path.rglob(OUTPUT_LOCK))  # the demo's lock and its verbs' are released
    (out / "notes.txt").write_text("added to my own demo run")
    stamp = (out / "annotate" / "00000.parquet").stat().st_mtime_ns
    cli(["demo", "--out", out, *SMALL_DEMO], 0, "report.html")  # resumed: nothing redone, nothing removed
    assert (out / "annotate" / "00000.parquet").stat().st_mtime_ns == stamp
    assert (out / "notes.txt").read_text() == "added to my own demo run" and not list(tmp_path.rglob(OUTPUT_LOCK))

    synth = tmp_path / "synth"
    cli(["data", "synth", "--out", synth, "--train", 1, "--val", 1, "--test", 1], 0)
    before = snapshot(synth)
    cli(["demo", "--out", synth, *SMALL_DEMO, "--overwrite"], 2, str(synth), "holds a caprl data synth run")
    assert snapshot(synth) == before


def test_eval_compare_writes_a_new_file_or_its_own_and_refuses_anything_else(extra, tmp_path: Path) -> None:
    a, b = extra["runs"]["run_a"], extra["runs"]["run_b"]
    mine = tmp_path / "report.html"
    mine.write_text("<html>my own report, hand-written</html>")
    cli(["eval", "compare", a, b, "--output", mine], 2, str(mine), "not a caprl eval report")
    assert mine.read_text() == "<html>my own report, hand-written</html>"
    folder = tmp_path / "folder"
    folder.mkdir()
    cli(["eval", "compare", a, b, "--output", folder], 2, str(folder), "is a folder")
    new = tmp_path / "new" / "cmp.html"
    cli(["eval", "compare", a, b, "--output", new], 0, str(new))
    first = new.read_text()
    cli(["eval", "compare", b, a, "--output", new], 0)  # the report it wrote before is replaced
    assert new.read_text() != first and "run_b" in new.read_text()


# --------------------------------------------------------------------------- 2. advice that never leads to data loss


def test_marker_advice_only_for_a_run_of_an_older_version(bad_env, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    (plain / "photos.parquet").write_bytes(b"not caprl's")
    result = cli(verb(bad_env, "annotate", plain, "--overwrite"), 2, str(plain), "is not a caprl run")
    assert "add an empty" not in result.output and "to resume" not in result.output, result.output

    older = tmp_path / "older"  # shards + stats of a run made before caprl-kit wrote its marker
    older.mkdir()
    for name in ("00000.parquet", "00000_stats.json", "00001.parquet", "00001_stats.json"):
        shutil.copy(bad_env["finished"] / name, older / name)
    cli(verb(bad_env, "annotate", older), 2, str(older), f"add an empty {RUN_MARKER}", "00000.parquet")
    assert not (older / RUN_MARKER).exists()


# --------------------------------------------------------------------------- 3. empty is an error


def _annotate_on(e: dict[str, Any], tmp_path: Path, path: Path, **input_keys: Any) -> Path:
    keys = ", ".join(f"{k}: {v}" for k, v in {"path": path, **input_keys}.items())
    return write_yaml(tmp_path / "a.yaml", f"""
        kind: annotate
        input: {{{keys}}}
        backend: {{name: transformers, model: {e['cap']}, sampling: {{max_tokens: 2, seed: 0}}}}
    """)


@pytest.mark.parametrize("content", ["nothing", "other files"])
def test_annotate_folder_without_media_stops_before_writing(content: str, bad_env, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "other files":
        (folder / "notes.txt").write_text("x")
        (folder / "sub").mkdir()
        (folder / "sub" / "data.csv").write_text("a,b\n")
    out = tmp_path / "out"
    cli(["annotate", "-c", _annotate_on(bad_env, tmp_path, folder), "-o", out], 2, str(folder), "no media", ".png",
        ".mp4")
    assert not out.exists()


def test_empty_manifests_and_globs_stop_before_writing(bad_env, tmp_path: Path) -> None:
    empty = tmp_path / "m.jsonl"
    empty.write_text("")
    out = tmp_path / "out"
    cli(["annotate", "-c", _annotate_on(bad_env, tmp_path, empty), "-o", out], 2, str(empty), "no rows", "'path'")
    pq.write_table(pa.table({"path": pa.array([], pa.string())}), tmp_path / "m.parquet")
    cli(["annotate", "-c", _annotate_on(bad_env, tmp_path, tmp_path / "m.parquet"), "-o", out], 2, "m.parquet", "no rows")
    tar = tmp_path / "notes.tar"  # a shard without one media member
    with tarfile.open(tar, "w") as fh:
        fh.add(empty, arcname="0001.txt")
    cli(["annotate", "-c", _annotate_on(bad_env, tmp_path, tar), "-o", out], 2, str(tar), "no media member", ".jpg")
    assert not out.exists()
    curate = write_yaml(tmp_path / "c.yaml", f"""
        kind: curate
        input: {{path: {empty}}}
        import_mode: qa
        answer: {{backend: {{name: lexical}}, evidence: caption}}
    """)
    cli(["curate", "-c", curate, "-o", out], 2, str(empty), "no rows")
    assert not out.exists()


def test_eval_and_pairs_on_no_rows_stop_before_writing(bad_env, extra, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli(verb(bad_env, "eval", out, f"benchmarks.0.path={bad_env['root'] / 'bench_empty.jsonl'}"), 2, "bench_empty.jsonl",
        "no rows", "'image'", "'answer'")
    empty = tmp_path / "qa.parquet"
    pq.write_table(pq.read_table(bad_env["root"] / "train.parquet").slice(0, 0), empty)
    cli(verb(bad_env, "eval", out, "benchmarks=[]", f"qa_utility.dataset={empty}"), 2, str(empty), "no rows")
    cli(["train", "pairs", "--config", extra["pairs"], "--output", out, f"data.path={empty}"], 2, str(empty),
        "no rows")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_dpo_on_an_empty_pairs_file_says_0_pairs(kind: str, bad_env, tmp_path: Path) -> None:
    from caprl_kit.schemas.pairs import PreferencePairRow

    pairs = tmp_path / f"pairs.{kind}"
    if kind == "parquet":
        pq.write_table(PreferencePairRow.arrow_schema().empty_table(), pairs)
    else:
        pairs.write_text("")
    out = tmp_path / "dpo"
    argv = ["train", "-c", "train/sanity_tiny_dpo", "-o", out, f"policy={bad_env['cap']}", f"data.train_files=[{pairs}]",
            "data.val_files=[]"]
    result = cli(argv, 2, str(pairs), "0 pairs")
    assert "could not read" not in result.output and not out.exists()
    cli([*argv, "--dry-run"], 2, "0 pairs")


# --------------------------------------------------------------------------- 4. numbers that mean what they say


def _shards_row(output: str) -> str:
    match = re.search(r"shards written / skipped\s*[│|]\s*(\d+ / \d+)", output)
    assert match, output
    return match.group(1)


def test_eval_summary_counts_its_shards(bad_env, tmp_path: Path) -> None:
    root = bad_env["root"]
    question = {"question": "What color is the square?", "options": ["red", "blue"]}
    bench = tmp_path / "bench2.jsonl"
    bench.write_text(json.dumps({"image": str(root / "images" / "a.png"), **question, "answer": "A"}) + "\n"
                     + json.dumps({"image": str(root / "images" / "b.png"), **question, "answer": "B"}) + "\n")
    out = tmp_path / "out"
    argv = verb(bad_env, "eval", out, f"benchmarks.0.path={bench}", "sharding.shard_size=1")
    assert _shards_row(cli(argv, 0).output) == "4 / 0"  # captions: 2 shards, answers: 2 shards
    assert _shards_row(cli(argv, 0).output) == "0 / 4"  # the rerun redoes nothing


def test_pairs_summary_counts_both_stages_shards(extra, tmp_path: Path) -> None:
    argv = ["train", "pairs", "--config", extra["pairs"], "--output", tmp_path / "pairs"]
    assert _shards_row(cli(argv, 0).output) == "2 / 0"  # samples: 1 shard, scores: 1 shard
    assert _shards_row(cli(argv, 0).output) == "0 / 2"


def test_compare_marks_averages_over_different_task_sets(extra) -> None:
    from caprl_kit.evaluate.report import compare

    runs = extra["runs"]
    page = compare([str(runs["run_a"]), str(runs["run_b"])])
    text = flat(re.sub(r"<[^>]+>", " ", page))
    assert flat("different task sets") in text, text
    assert flat("shared tasks (chartqa)") in text or flat("shared tasks: chartqa") in text, text
    summary = page.split('id="summary"')[1].split("</table>")[0]
    assert summary.count("*") >= 2  # both averages are marked
    assert "0.5000" in summary and "0.7000" in summary and "0.7500" in summary
    same = compare([str(runs["run_b"]), str(runs["run_b"])])  # one task set: no mark, no note
    assert "different task sets" not in same


# --------------------------------------------------------------------------- 5. train export


def test_export_runs_under_caprls_interpreter_and_reports_a_failed_merge_in_one_message(
        extra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"  # a python3 on PATH that is not caprl's: it must not be the one run
    bin_dir.mkdir()
    used = tmp_path / "wrong-python-used"
    fake = bin_dir / "python3"
    fake.write_text(f"#!/bin/sh\ntouch {used}\necho 'Traceback (most recent call last):' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "hf"
    ckpt = extra["checkpoint"]
    result = cli(["train", "export", ckpt, "--output", out], 2, str(ckpt), "export.log")
    assert not used.exists(), "ran python3 from PATH instead of caprl's interpreter"
    message = result.output.split("error:", 1)[1]  # one message: the cause, not the merger's traceback
    assert "File \"" not in message and "serialization.py" not in message, message
    assert flat("verl's model merger stopped with ValueError") in flat(message), message
    log = (out / "export.log").read_text()
    assert "Traceback" in log and sys.executable in log


def test_export_of_an_incomplete_checkpoint_names_what_is_missing(extra, tmp_path: Path) -> None:
    ckpt = tmp_path / "global_step_7"
    (ckpt / "actor").mkdir(parents=True)
    (ckpt / "actor" / "fsdp_config.json").write_text(json.dumps({"world_size": 2}))
    (ckpt / "actor" / "model_world_size_2_rank_0.pt").write_bytes(b"x")
    out = tmp_path / "hf"
    cli(["train", "export", ckpt, "--output", out], 2, str(ckpt), "missing", "model_world_size_2_rank_1.pt",
        "huggingface/config.json")
    assert not out.exists()
    cli(["train", "export", tmp_path / "nope", "--output", out], 2, "nope")
