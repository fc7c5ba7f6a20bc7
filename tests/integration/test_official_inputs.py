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


def test_a_glob_matching_nothing_names_the_key(tmp_path: Path) -> None:
    folder, _ = write_gen_qa_output(tmp_path)
    result = cli(["curate", "-c", gen_qa_config(tmp_path), "-o", tmp_path / "out", f"input.path={folder}/parts_*.jsonl"],
                 2, f"input.path: the glob {folder}/parts_*.jsonl matches no file")
    assert "FileNotFoundError" not in result.output
