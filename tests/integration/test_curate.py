"""caprl curate end to end: tiny models over generated images/video with corrupt files, import mode with exact
kept sets, consumers' loaders (verl's create_rl_dataset, datasets), resume after a kill in the answer stage, Ray."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.config import deep_merge
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.pipeline import run
from caprl_kit.synthetic import write_scenes
from media_factory import make_video_bytes

runner = CliRunner()


def scene_manifest(root: Path, n: int = 10, drop_facts_every: int = 3) -> tuple[Path, list[dict]]:
    """Scenes with their MCQs (import mode) and captions; every third caption omits its last fact, so the questions
    about it fail the visual filter. Plus one missing file."""
    scenes = write_scenes(root / "images", n)
    rng = random.Random(0)
    rows = []
    for i, s in enumerate(scenes):
        facts = s.facts[:-1] if (i % drop_facts_every == 0 and len(s.facts) > 1) else s.facts
        caption = s.caption() if len(s.facts) == 1 else " ".join(f"A {f.color} {f.shape} at the {f.position}."
                                                                  for f in facts)
        qa = s.mcqs(rng)  # one-shape scenes: 3 questions about "the object"; else colour + position per shape
        rows.append({"path": f"images/{s.key}.png", "qa": qa, "caption": caption, "n_facts_told": len(facts),
                     "n_answerable": len(qa) if len(s.facts) == 1 else 2 * len(facts)})
    rows.append({"path": "images/missing.png", "qa": rows[0]["qa"], "caption": "x", "n_facts_told": 0})
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest, rows


def lexical_cfg(manifest: Path, out: Path, **extra) -> CurateConfig:
    base = {"input": {"path": str(manifest)}, "import_mode": "qa",
            "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
            "sharding": {"shard_size": 4}, "export": {"val_fraction": 0.25}, "output_dir": str(out)}
    return CurateConfig.model_validate(deep_merge(base, extra))


def test_carried_input_columns_reach_the_curated_rows(tmp_path: Path) -> None:
    """input.carry_columns are copied into every curated row (Parquet and JSONL), typed: the reference caption a
    faithfulness reward reads, a number, a nested object; datasets loads them."""
    import datasets

    manifest, rows = scene_manifest(tmp_path)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for i, r in enumerate(lines):
        r.update(n=i, meta={"license": "cc0", "tags": [f"t{i}"]})
    manifest.write_text("\n".join(json.dumps(r) for r in lines))
    run(lexical_cfg(manifest, tmp_path / "out", input={"carry_columns": ["caption", "n", "meta"]}))
    by_path = {r["path"]: r for r in lines}
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "dataset" / "train.parquet"), split="train")
    assert len(ds) > 0 and {"caption", "n", "meta"} <= set(ds.column_names)
    for row in ds:
        source = by_path[f"images/{Path(row['images'][0]).name}"]
        assert row["caption"] == source["caption"] and row["n"] == source["n"] and row["meta"] == source["meta"]
    jsonl = [json.loads(x) for x in (tmp_path / "out" / "dataset" / "train.jsonl").read_text().splitlines()]
    assert jsonl and all({"caption", "n", "meta"} <= set(r) for r in jsonl)


def test_import_mode_exact_kept_set_and_funnel(tmp_path: Path) -> None:
    manifest, rows = scene_manifest(tmp_path)
    # a generator model configured but unused in import mode: provenance must say "import", not the model
    report = run(lexical_cfg(manifest, tmp_path / "out", generate={"backend": {"model": "Qwen/Qwen2.5-VL-72B-Instruct"}}))
    funnel = json.loads((tmp_path / "out" / "dataset" / "funnel.json").read_text())
    # a question is kept iff its shape is in the caption (2 questions per fact: color and position)
    expected_kept = sum(r["n_answerable"] for r in rows[:-1])
    expected_total = sum(len(r["qa"]) for r in rows[:-1])
    assert funnel["questions_kept"] == expected_kept
    assert funnel["questions_answered"] == expected_total
    assert funnel["items_in"] == 11 == funnel["items_kept"] + sum(funnel["items_dropped"].values())
    assert funnel["items_dropped"] == {"file_not_found": 1}
    audit = pl.read_parquet(tmp_path / "out" / "dataset" / "audit.parquet")
    assert audit.height == expected_total
    assert set(audit["reason"]) == {"kept", "visual_acc_low"}
    assert audit.filter(pl.col("keep"))["visual_acc"].min() == 1.0
    train = pl.read_parquet(tmp_path / "out" / "dataset" / "train.parquet")
    val = pl.read_parquet(tmp_path / "out" / "dataset" / "val.parquet")
    assert train.height + val.height == 10 and val.height > 0
    assert report.metrics["questions_kept"] == expected_kept
    row = train.row(0, named=True)
    assert row["prompt"] == [{"role": "user", "content": "<image> Please describe this image in detail."}]
    assert row["data_source"] == "image_caption_rl" and row["images"][0].endswith(".png")
    assert row["extra_info"]["generator"] == "import:qa" and row["extra_info"]["answerer"] == "lexical"
    assert all(c[1] == ")" for q in row["reward_model"]["ground_truth"] for c in q["choices"])
    html = (tmp_path / "out" / "dataset" / "funnel.html").read_text()
    assert "<svg" in html and "file_not_found" in html
    jsonl = [json.loads(line) for line in (tmp_path / "out" / "dataset" / "train.jsonl").read_text().splitlines()]
    assert len(jsonl) == train.height and "image" not in jsonl[0] and jsonl[0]["images"] == row["images"]
    # every output validates against the committed data_schemas/
    import jsonschema

    schemas = Path(__file__).resolve().parents[2] / "data_schemas"
    curated_schema = json.loads((schemas / "curated_qa.v1.schema.json").read_text())
    for r in jsonl:
        jsonschema.validate(r, curated_schema)
    trials_schema = json.loads((schemas / "qa_trials.v1.schema.json").read_text())
    for r in audit.to_dicts():
        jsonschema.validate(r, trials_schema)


def test_outputs_load_in_datasets_with_images_decoding(tmp_path: Path) -> None:
    import datasets

    manifest, _ = scene_manifest(tmp_path)
    run(lexical_cfg(manifest, tmp_path / "out", export={"embed_media": True}))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "dataset" / "train.parquet"), split="train")
    ds = ds.cast_column("image", datasets.Image())
    img = ds[0]["image"]
    assert img.size == (112, 112) and img.mode == "RGB"
    assert len(ds[0]["reward_model"]["ground_truth"]) >= 1


def test_embedded_bytes_are_read_by_the_workers_not_carried_between_stages(tmp_path: Path) -> None:
    """A Parquet manifest embedding its images: generate records where each item's bytes are (not the bytes), the
    later stages and the export read them through that; the kept set is the one the same images as files give."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest, rows = scene_manifest(tmp_path)
    blobs = [(tmp_path / r["path"]).read_bytes() if (tmp_path / r["path"]).exists() else None for r in rows]
    pq.write_table(pa.Table.from_pylist([{"id": Path(r["path"]).stem, "blob": b, "qa": json.dumps(r["qa"]),
                                          "caption": r["caption"]} for r, b in zip(rows, blobs)]),
                   tmp_path / "embedded.parquet", row_group_size=3)
    run(lexical_cfg(manifest, tmp_path / "files"))
    run(lexical_cfg(tmp_path / "embedded.parquet", tmp_path / "emb",
                    input={"key_column": "id", "bytes_column": "blob"}))
    gen = pl.read_parquet(str(tmp_path / "emb" / "generate" / "*.parquet"))
    assert gen["media_bytes"].null_count() == gen.height and gen["media_locator"].null_count() == 0
    assert gen["media_locator"][0]["kind"] == "parquet"  # a struct column
    funnel = json.loads((tmp_path / "emb" / "dataset" / "funnel.json").read_text())
    assert funnel["items_dropped"] == {"no_media": 1}  # the row without bytes or path: a status, not a dead run
    kept = {name: pl.read_parquet(tmp_path / name / "dataset" / "audit.parquet").filter(pl.col("keep"))
            for name in ("files", "emb")}
    assert kept["emb"].height == kept["files"].height > 0
    train = pl.read_parquet(tmp_path / "emb" / "dataset" / "train.parquet")
    written = Path(train["images"][0][0])  # the export wrote the located bytes out as a file verl can open
    assert written.parent == tmp_path / "emb" / "dataset" / "media" and written.read_bytes() in blobs


@pytest.mark.slow
def test_parquet_and_jsonl_load_through_verls_create_rl_dataset(tmp_path: Path, tiny_models) -> None:
    pytest.importorskip("verl")
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    manifest, _ = scene_manifest(tmp_path)
    run(lexical_cfg(manifest, tmp_path / "out"))
    data = tmp_path / "out" / "dataset"
    n_rows = pl.read_parquet(data / "train.parquet").height
    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    for files in (data / "train.parquet", data / "train.jsonl"):
        with initialize_config_dir(config_dir=cfg_dir, version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=[
                f"data.train_files={files}", f"data.val_files={files}", "data.filter_overlong_prompts=True",
                "data.max_prompt_length=1024", f"actor_rollout_ref.model.path={tiny_models['captioner']}",
                f"+data.cache_dir={tmp_path / 'verl-cache'}",
                # filter in-process: a worker pool forked from the (threaded) test process can deadlock
                "data.filter_overlong_prompts_workers=null"])
        model = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
        ds = create_rl_dataset(cfg.data.train_files, cfg.data, model.tokenizer, model.processor)
        assert len(ds) == n_rows, files
        item = ds[0]
        content = item["raw_prompt"][0]["content"]
        assert any(part.get("type") == "image" for part in content), content


def test_tiny_models_end_to_end_with_video_and_corrupt_files(tmp_path: Path, tiny_models) -> None:
    d = tmp_path / "in"
    write_scenes(d, 4)
    (d / "clip.mp4").write_bytes(make_video_bytes(n_frames=20, fps=10))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (d / "empty.jpg").write_bytes(b"")
    vlm = {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 4,
           "sampling": {"max_tokens": 24, "temperature": 0.1, "repetition_penalty": 1.05}}
    cfg = CurateConfig.model_validate({
        "input": {"path": str(d)}, "generate": {"backend": vlm}, "answer": {"backend": {**vlm, "sampling": {"max_tokens": 4}}},
        "media": {"video_max_frames": 4}, "sharding": {"shard_size": 3}, "output_dir": str(tmp_path / "out")})
    report = run(cfg)
    funnel = json.loads((tmp_path / "out" / "dataset" / "funnel.json").read_text())
    assert funnel["items_in"] == 7 == funnel["items_kept"] + sum(funnel["items_dropped"].values())
    assert funnel["items_dropped"]["failed_to_decode"] == 1 and funnel["items_dropped"]["empty_file"] == 1
    gen = pl.read_parquet(str(tmp_path / "out" / "generate" / "*.parquet"))
    assert gen.height == 7 and gen.filter(pl.col("status") == "ok").height == 5  # 4 images + the video
    assert gen.filter(pl.col("media_type") == "video")["raw_text"][0] is not None
    assert report.metrics["generate_requests"] == 5  # one per readable item (4 images + the video)


def test_kill_during_answer_stage_then_resume_is_identical(tmp_path: Path, tiny_models) -> None:
    manifest, _ = scene_manifest(tmp_path, n=12)
    answerer = {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 8,
                "sampling": {"max_tokens": 3, "temperature": 0.7}}
    job = {"kind": "curate", "input": {"path": str(manifest)}, "import_mode": "qa", "seed": 7,
           "answer": {"backend": answerer, "rotations": 2}, "sharding": {"shard_size": 2}}
    conf = tmp_path / "job.yaml"
    conf.write_text(json.dumps(job))
    clean = tmp_path / "clean"
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "caprl_kit", "curate", "-c", str(conf)]
    assert subprocess.run(cmd + ["-o", str(clean)], capture_output=True).returncode == 0
    proc = subprocess.Popen(cmd + ["-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "answer").glob("*_stats.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(list((killed / "answer").glob("*_stats.json"))) < 7, "killed inside the answer stage"
    assert subprocess.run(cmd + ["-o", str(killed)], capture_output=True).returncode == 0
    for name in ("train.parquet", "val.parquet", "audit.parquet"):
        a = pl.read_parquet(clean / "dataset" / name)
        b = pl.read_parquet(killed / "dataset" / name)
        assert a.equals(b), name
    assert (clean / "dataset" / "funnel.json").read_text() == (killed / "dataset" / "funnel.json").read_text()


@pytest.mark.slow
def test_ray_runner_keeps_the_same_set(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    manifest, _ = scene_manifest(tmp_path)
    run(lexical_cfg(manifest, tmp_path / "local"))
    run(lexical_cfg(manifest, tmp_path / "ray", runner={"name": "ray", "num_workers": 2}))
    cols = ["key", "qa_index", "keep", "reason", "visual_acc", "text_acc"]
    a = pl.read_parquet(tmp_path / "local" / "dataset" / "audit.parquet").select(cols).sort(["key", "qa_index"])
    b = pl.read_parquet(tmp_path / "ray" / "dataset" / "audit.parquet").select(cols).sort(["key", "qa_index"])
    assert a.equals(b) and a["keep"].sum() > 0


def test_cli_dry_run_and_run(tmp_path: Path) -> None:
    manifest, _ = scene_manifest(tmp_path)
    conf = tmp_path / "c.yaml"
    conf.write_text(json.dumps({"kind": "curate", "input": {"path": str(manifest)}, "import_mode": "qa",
                                "answer": {"backend": {"name": "lexical"}, "evidence": "caption"}}))
    dry = runner.invoke(app, ["curate", "-c", str(conf), "--dry-run"])
    assert dry.exit_code == 0 and "read 11 item(s)" in dry.output
    res = runner.invoke(app, ["curate", "-c", str(conf), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "dataset" / "train.parquet").exists()
    changed = runner.invoke(app, ["curate", "-c", str(conf), "-o", str(tmp_path / "o"), "answer.rotations=2"])
    assert changed.exit_code == 2 and "--overwrite" in " ".join(changed.output.split())


def test_import_mode_bad_mcqs_are_dropped_with_reasons_not_fatal(tmp_path: Path) -> None:
    """Strict MCQs (issue 17): a bad imported question is dropped and counted under its reason (naming the item key
    and the question index), an item with nothing valid is dropped as no_questions, the job finishes; an answer
    given as option text is kept as its label."""
    manifest, rows = scene_manifest(tmp_path)
    clean = [dict(r) for r in rows]
    rows[1]["qa"] = [{**rows[1]["qa"][0], "answer": "E"}] + rows[1]["qa"][1:]  # question 0: no label E
    rows[2]["qa"] = [{**q, "answer": q["choices"]["ABCD".index(q["answer"])][3:].upper()} for q in rows[2]["qa"]]
    rows[4]["qa"] = [{**q, "question": "  "} for q in rows[4]["qa"]]  # every question bad
    rows[5]["qa"] = {"question": "not a list"}  # the row's import data as a whole is unusable
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = run(lexical_cfg(manifest, tmp_path / "out"))
    funnel = json.loads((tmp_path / "out" / "dataset" / "funnel.json").read_text())
    assert funnel["items_dropped"] == {"file_not_found": 1, "no_questions": 1, "unparseable": 1}
    assert funnel["questions_rejected"] == {"answer_not_a_label": 1, "empty_question": len(rows[4]["qa"])}
    assert funnel["questions_rejected_by_parser"] == 1 + len(rows[4]["qa"])
    assert funnel["questions_rejected_examples"][0] == (
        f"{rows[1]['path']} question 0: answer 'E' is not one of the labels A, B, C, D")
    assert f"{rows[4]['path']} question 1: empty question" in funnel["questions_rejected_examples"]
    # every other question is answered and filtered as before; row 2's text answers count as their letters
    expected_kept = sum(r["n_answerable"] for r in clean[:-1]) - 1 - clean[4]["n_answerable"] - clean[5]["n_answerable"]
    assert funnel["questions_kept"] == report.metrics["questions_kept"] == expected_kept
    parsed = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "out" / "parse").glob("*.parquet"))])
    by_key = {r["key"]: r for r in parsed.to_dicts()}
    assert by_key[rows[1]["path"]]["rejected"] == [{"index": 0, "kind": "answer_not_a_label", "reason":
                                                    f"{rows[1]['path']} question 0: answer 'E' is not one of the labels A, B, C, D"}]
    assert [q["answer"] for q in by_key[rows[2]["path"]]["questions"]] == [q["answer"] for q in clean[2]["qa"]]
    assert by_key[rows[5]["path"]]["status"] == "unparseable"
    assert "answer_not_a_label" in (tmp_path / "out" / "dataset" / "funnel.html").read_text()


def test_an_imported_nine_choice_mcq_is_rejected_not_a_failed_shard(tmp_path: Path) -> None:
    """A 9-choice question leaves no label for the answer stage's "None of the above" option: it used to pass the
    validator and crash its shard (IndexError); now it is that question's own rejection and the run finishes."""
    manifest, rows = scene_manifest(tmp_path, n=4)
    nine = {"question": "Which shade is it?", "choices": [f"shade {i}" for i in range(9)], "answer": "shade 0"}
    rows[1]["qa"] = [nine] + rows[1]["qa"]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = run(lexical_cfg(manifest, tmp_path / "out"))
    funnel = json.loads((tmp_path / "out" / "dataset" / "funnel.json").read_text())
    assert funnel["questions_rejected"] == {"too_many_choices": 1}
    (example,) = funnel["questions_rejected_examples"]
    assert example.startswith(f"{rows[1]['path']} question 0: 9 choices, at most 8") and "cannot-answer" in example
    assert funnel["items_dropped"] == {"file_not_found": 1}  # the item keeps its other questions
    assert funnel["questions_answered"] == sum(len(r["qa"]) for r in rows[:-1]) - 1
    assert funnel["questions_kept"] == report.metrics["questions_kept"] > 0
    assert report.n_failed == 1 and not report.status_counts.get("failed")  # the missing file only, no dead shard


def test_official_qa_files_import_as_published(tmp_path: Path, tiny_models) -> None:
    """CapRL-QA-75K Parquet (image struct bytes, QA in reward_model.ground_truth, "A) x" choices) and
    CapRL-Video-QA-20K JSONL (videos relative to the LLaVA-Video-178K root, "A. x" choices) in import mode."""
    from official_layouts import write_qa75k, write_video_qa20k

    qa75k = write_qa75k(tmp_path / "CapRL-QA-75K" / "train-00000-of-00001.parquet")
    video_jsonl, media_root = write_video_qa20k(tmp_path / "CapRL-Video-QA-20K")
    vlm = {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 4,
           "sampling": {"max_tokens": 4, "temperature": 0.1}}
    common = {"import_mode": "qa", "import_column": "reward_model.ground_truth", "answer": {"backend": vlm},
              "media": {"video_max_frames": 4}, "sharding": {"shard_size": 3}}
    for name, inp, n in (("img", {"path": str(qa75k), "path_column": "image", "key_column": "id"}, 4),
                         ("vid", {"path": str(video_jsonl), "path_column": "videos", "media_root": str(media_root)},
                          2)):
        run(CurateConfig.model_validate({**common, "input": inp, "output_dir": str(tmp_path / name)}))
        funnel = json.loads((tmp_path / name / "dataset" / "funnel.json").read_text())
        # every row read and every question parsed (the tiny random answerer then keeps none: that is the filter)
        assert funnel["items_in"] == n and set(funnel["items_dropped"]) <= {"no_question_kept"}, funnel
        assert funnel["questions_parsed"] == n and funnel["questions_rejected_by_parser"] == 0, funnel
        assert funnel["questions_answered"] == n, funnel
        gen = pl.read_parquet(str(tmp_path / name / "generate" / "*.parquet"))
        assert set(gen["status"]) == {"ok"}
        parsed = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / name / "parse").glob("*.parquet"))])
        assert parsed.height == n
        if name == "img":  # the image bytes stay in the input file: generate records where they are
            assert gen["media_locator"].null_count() == 0 and gen["media_bytes"].null_count() == gen.height
        else:
            assert set(gen["media_type"]) == {"video"} and all(Path(s).is_file() for s in gen["source"])
            assert all(s.startswith(str(media_root)) for s in gen["source"])
