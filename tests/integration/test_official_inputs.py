"""Official formats in (issue 24): gen_qa's parallel ``part_*.jsonl`` output given as a glob or a list of files,
its output folder refused with the form to use, and the official QA sets' own prompts kept for training."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from cli_cases import cli, write_yaml
from official_layouts import write_gen_qa_output


def gen_qa_config(root: Path) -> Path:
    """gen_qa's rows in import mode: the generator-style text in ``qa_response``, the image in ``image_path``."""
    return write_yaml(root / "gen_qa.yaml", """
        kind: curate
        import_mode: text
        import_column: qa_response
        input: {path_column: image_path}
        answer: {backend: {name: lexical}}
        sharding: {shard_size: 4}
    """)


def imported(out: Path) -> list[str]:
    """The item keys the generate stage recorded, one per imported row, in order."""
    return pl.read_parquet(str(out / "generate" / "*.parquet"))["key"].to_list()


def test_a_glob_over_gen_qa_parts_imports_every_row_once(tmp_path: Path) -> None:
    folder, paths = write_gen_qa_output(tmp_path, n_parts=3, per_part=2)
    out = tmp_path / "out"
    cli(["curate", "-c", gen_qa_config(tmp_path), "-o", out, f"input.path={folder}/part_*.jsonl"], 0)
    assert imported(out) == paths  # every row of the three parts, once each, in part order
    funnel = json.loads((out / "dataset" / "funnel.json").read_text())
    assert funnel["items_in"] == 6 and funnel["questions_parsed"] == 6 and funnel["questions_rejected_by_parser"] == 0
    assert funnel["items_in"] == funnel["items_kept"] + sum(funnel["items_dropped"].values())


def test_a_list_of_gen_qa_parts_imports_those_files(tmp_path: Path) -> None:
    folder, paths = write_gen_qa_output(tmp_path, n_parts=3, per_part=2)
    out = tmp_path / "out"
    parts = f"[{folder}/part_2.jsonl, {folder}/part_0.jsonl]"  # the list's order, not sorted
    cli(["curate", "-c", gen_qa_config(tmp_path), "-o", out, f"input.path={parts}"], 0)
    assert imported(out) == paths[4:] + paths[:2]


def test_gen_qa_output_folder_is_refused_with_the_glob_to_give(tmp_path: Path) -> None:
    """The folder holds no media but JSONL parts: one message, exit code 2, no traceback, nothing written; it offers
    the parts' glob (not the progress files')."""
    folder, _ = write_gen_qa_output(tmp_path)
    out = tmp_path / "out"
    result = cli(["curate", "-c", gen_qa_config(tmp_path), "-o", out, f"input.path={folder}"], 2,
                 f"input.path {folder} is a folder with no media files but 6 manifest file(s)",
                 f"give the files: input.path={folder}/part_*.jsonl (a glob) or a list of them")
    assert result.output.count("error:") == 1 and not (out / "dataset").exists()
    # the dry run refuses it too, with the same message, instead of planning 0 items
    for verb in ("curate", "annotate"):
        args = [verb, "-c", gen_qa_config(tmp_path) if verb == "curate" else "annotate/caption_images_qwen25vl3b"]
        cli([*args, "--dry-run", f"input.path={folder}"], 2, f"give the files: input.path={folder}/part_*.jsonl")


def test_a_glob_matching_nothing_names_the_key(tmp_path: Path) -> None:
    folder, _ = write_gen_qa_output(tmp_path)
    result = cli(["curate", "-c", gen_qa_config(tmp_path), "-o", tmp_path / "out", f"input.path={folder}/parts_*.jsonl"],
                 2, f"input.path: the glob {folder}/parts_*.jsonl matches no file")
    assert "FileNotFoundError" not in result.output


# --------------------------------------------------------------------------- the official sets' own prompts


def video_qa20k_with_captions(root: Path, prompts: list | None = None) -> tuple[Path, Path]:
    """CapRL-Video-QA-20K rows as published, plus a ``caption`` per row that answers its question (the lexical
    answerer's evidence, so every question passes the filter); ``prompts`` replaces rows' ``prompt`` (None: the
    row has none)."""
    from official_layouts import write_video_qa20k

    path, media = write_video_qa20k(root, n=4)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["caption"] = "The white dot moves, the black one stays."
        if prompts is not None and prompts[i] != "as published":
            if prompts[i] is None:
                del row["prompt"]
            else:
                row["prompt"] = prompts[i]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, media


def curate_video(path: Path, media: Path, out: Path, **export) -> dict:
    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.curate.pipeline import run

    run(CurateConfig.model_validate({
        "input": {"path": str(path), "path_column": "videos", "media_root": str(media)},
        "import_mode": "qa", "import_column": "reward_model.ground_truth",
        "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
        "media": {"video_max_frames": 4}, "export": {"val_fraction": 0.0, **export}, "output_dir": str(out)}))
    return json.loads((out / "dataset" / "funnel.json").read_text())


def exported_prompts(out: Path) -> list[list[dict]]:
    rows = pl.read_parquet(out / "dataset" / "train.parquet")["prompt"].to_list()
    jsonl = [json.loads(line)["prompt"] for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    assert rows == jsonl
    return rows


def test_video_qa20k_rows_keep_their_published_prompt_unless_replaced(tmp_path: Path) -> None:
    from official_layouts import VIDEO_PROMPT

    from caprl_kit.prompts import PROMPTS

    path, media = video_qa20k_with_captions(tmp_path / "data")
    funnel = curate_video(path, media, tmp_path / "out")
    assert funnel["items_kept"] == 4 and funnel["prompts"] == {"input": 4, "config": 0}, funnel
    assert exported_prompts(tmp_path / "out") == [[{"role": "user", "content": VIDEO_PROMPT}]] * 4
    assert "4 row(s) keep their input's own" in (tmp_path / "out" / "dataset" / "funnel.html").read_text()
    # the key that replaces them: a re-export of the same run (the stages' outputs are kept)
    funnel = curate_video(path, media, tmp_path / "out", prompt_source="config")
    assert funnel["prompts"] == {"input": 0, "config": 4}
    ours = "<video>\n" + PROMPTS.get("caprl_video_timestamped")
    assert ours != VIDEO_PROMPT and exported_prompts(tmp_path / "out") == [[{"role": "user", "content": ours}]] * 4


def test_rows_without_a_prompt_get_the_configured_one_and_text_prompts_are_one_message(tmp_path: Path,
                                                                                       caplog) -> None:
    """A row without a prompt gets export.video_prompt; text is one user message, JSON text of messages is read as
    them; the configured prompt that rows with their own did not get is said once."""
    import logging

    from official_layouts import VIDEO_PROMPT

    from caprl_kit.prompts import PROMPTS

    text = "<video>\nDescribe the clip."
    path, media = video_qa20k_with_captions(tmp_path / "data", ["as published", None, text, json.dumps(
        [{"role": "system", "content": "Be exact."}, {"role": "user", "content": text}])])
    with caplog.at_level(logging.WARNING, logger="caprl_kit.curate.export"):
        funnel = curate_video(path, media, tmp_path / "out", video_prompt="caprl_video")
    assert funnel["prompts"] == {"input": 3, "config": 1}
    assert [r.getMessage() for r in caplog.records if r.name == "caprl_kit.curate.export"] == [
        "3 exported row(s) kept their input's own prompt, not export.video_prompt (export.prompt_source=input); "
        "set export.prompt_source=config to give every row the configured prompt"]
    got = sorted(exported_prompts(tmp_path / "out"), key=json.dumps)
    assert got == sorted([[{"role": "user", "content": VIDEO_PROMPT}],
                          [{"role": "user", "content": "<video>\n" + PROMPTS.get("caprl_video")}],
                          [{"role": "user", "content": text}],
                          [{"role": "system", "content": "Be exact."}, {"role": "user", "content": text}]],
                         key=json.dumps)


def test_a_prompt_that_is_not_chat_messages_names_the_item_and_the_key(tmp_path: Path) -> None:
    import pytest

    from caprl_kit.errors import CaprlError

    path, media = video_qa20k_with_captions(tmp_path / "data", ["as published", [{"text": "no role"}], "as published",
                                                                 "as published"])
    with pytest.raises(CaprlError, match=r"input item .*ytb_clip1\.mp4: its 'prompt' is neither text nor chat "
                                         r"messages .*set export.prompt_source=config"):
        curate_video(path, media, tmp_path / "out")


# --------------------------------------------------------------------------- eval's held-out QA set as several files


def test_qa_utility_dataset_takes_a_glob_or_a_list(tmp_path: Path) -> None:
    """``qa_utility.dataset`` as a glob or a list of curated files: every row of each file is scored once (precomputed
    captions, the lexical answerer); a glob matching nothing names the key. ``captions.path`` as a glob over the
    captions split in parts (CapRL-2M's Parquet shards) scores as the one file."""
    import pytest
    from curated_sets import curate_import, scene_rows

    from caprl_kit.errors import CaprlError
    from caprl_kit.evaluate.config import EvalConfig
    from caprl_kit.evaluate.pipeline import run
    from caprl_kit.synthetic import write_scenes

    scenes = write_scenes(tmp_path / "images", 6)
    dataset = curate_import(tmp_path, scene_rows(scenes), val_fraction=0.5)
    n_rows = {split: pl.read_parquet(dataset / f"{split}.parquet").height for split in ("train", "val")}
    assert min(n_rows.values()) > 0
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"image": str(tmp_path / "images" / f"{s.key}.png"), "caption": s.caption()})
                                + "\n" for s in scenes))

    def evaluate(dataset_key, out: str, captions_key=str(captions)) -> dict:
        run(EvalConfig.model_validate({"qa_utility": {"dataset": dataset_key, "qa": {"mode": "all_qa"}},
                                       "captions": {"path": captions_key}, "answerer": {"name": "lexical"},
                                       "output_dir": str(tmp_path / out)}))
        return json.loads((tmp_path / out / "results_latest.json").read_text())["tasks"]["qa_utility"]

    one = evaluate(str(dataset / "train.parquet"), "one")
    assert one["n_samples"] == n_rows["train"]
    assert evaluate(f"{dataset}/[tv]*.parquet", "glob")["n_samples"] == n_rows["train"] + n_rows["val"]
    with pytest.raises(CaprlError, match=r"qa_utility.dataset: .*audit.parquet is not a curated QA file"):
        evaluate(f"{dataset}/*.parquet", "audit")  # the glob takes the audit table too: refused before writing
    assert not (tmp_path / "audit").exists()
    listed = evaluate([str(dataset / "val.parquet"), str(dataset / "train.parquet")], "list")
    assert listed["n_samples"] == n_rows["train"] + n_rows["val"]
    with pytest.raises(CaprlError, match=r"qa_utility.dataset: the glob .*/nope-\*.parquet matches no file"):
        evaluate(f"{dataset}/nope-*.parquet", "none")
    assert not (tmp_path / "none").exists()
    lines = captions.read_text().splitlines(keepends=True)
    (tmp_path / "parts").mkdir()
    for part in range(2):
        (tmp_path / "parts" / f"captions_{part}.jsonl").write_text("".join(lines[part::2]))
    parts = evaluate(str(dataset / "train.parquet"), "parts-run", f"{tmp_path}/parts/captions_*.jsonl")
    assert (parts["n_samples"], parts["m_acc"]) == (one["n_samples"], one["m_acc"]) and parts["n_failed"] == 0
