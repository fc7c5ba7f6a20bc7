"""``caprl data export`` on small real runs (curate in import mode with the lexical answerer; annotate, pairs and
eval on the tiny captioner): every format's files are read back as their consumer reads them.

None of the consumers' own loaders is installed here: ``llamafactory`` 0.9.5 and ``ms-swift`` 4.6.0 install from
PyPI but pin ``datasets`` / ``transformers`` / ``trl`` / ``peft`` below this environment's (and pull gradio,
modelscope, ...), EasyR1 is not on PyPI (its repository installs a package named ``verl``, which the train extra's
verl 0.9.1 occupies), and lmms-eval pins its own stack. So each file is checked against the consumer's documented
schema (the rules are cited in each checker) and loaded with ``datasets.load_dataset("json", ...)`` the way those
trainers load a local JSON/JSONL file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curated_sets import curate_import, scene_rows
from media_factory import make_image_bytes, make_video_bytes
from PIL import Image
from typer.testing import CliRunner

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import run as annotate
from caprl_kit.cli import app
from caprl_kit.errors import CaprlError
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run as evaluate
from caprl_kit.exports import export
from caprl_kit.pairs.config import PairsConfig
from caprl_kit.pairs.pipeline import run as run_pairs
from caprl_kit.synthetic import write_scenes

runner = CliRunner()
N_CAPTIONS = 2


def _captioner(tiny: dict[str, Path], n: int = N_CAPTIONS) -> dict[str, Any]:
    return {
        "name": "transformers",
        "model": str(tiny["captioner"]),
        "batch_size": 4,
        "sampling": {"n": n, "temperature": 1.0, "max_tokens": 6, "seed": 0},
    }


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """One run of each kind: curate (train + val), annotate over a folder (images, a video, a broken file; n=2),
    annotate over embedded bytes (no file paths), train pairs, eval (captions/<task>/)."""
    root = tmp_path_factory.mktemp("export-runs")
    scenes = write_scenes(root / "images", 6)
    curate_import(root, scene_rows(scenes), out="cur", val_fraction=0.3)

    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / f"img_{i}.png").write_bytes(make_image_bytes(color=(60 * i, 100, 200), size=(64 + 8 * i, 64)))
    (folder / "sub" / "clip.mp4").write_bytes(make_video_bytes(n_frames=20, fps=10))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    annotate(
        AnnotateConfig.model_validate(
            {
                "input": {"path": str(folder)},
                "backend": _captioner(tiny_models),
                "media": {"video_max_frames": 4},
                "sharding": {"shard_size": 2},
                "output_dir": str(root / "ann"),
            }
        )
    )

    table = pa.table(
        {
            "key": ["a", "b"],
            "jpeg": [
                make_image_bytes(fmt="JPEG", color=(200, 10, 10)),
                make_image_bytes(fmt="PNG", color=(10, 10, 200)),
            ],
        }
    )
    pq.write_table(table, root / "embedded.parquet")
    annotate(
        AnnotateConfig.model_validate(
            {
                "input": {"path": str(root / "embedded.parquet"), "key_column": "key", "bytes_column": "jpeg"},
                "backend": _captioner(tiny_models, n=1),
                "output": {"embed_media": True},
                "output_dir": str(root / "ann_bytes"),
            }
        )
    )

    # a term that tells the random tiny captioner's samples apart (the lexical answerer alone scores them all 0)
    (root / "chars.py").write_text(
        "def distinct_chars(completions, **kw):\n"
        "    return [len(set(c[-1]['content'] if isinstance(c, list) else c)) / 10 "
        "for c in completions]\n"
    )
    run_pairs(
        PairsConfig.model_validate(
            {
                "data": {"path": str(root / "cur" / "dataset" / "train.parquet")},
                "captioner": {
                    **_captioner(tiny_models, n=3),
                    "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 8, "seed": 0},
                },
                "reward": {
                    "qa": {"answerer": {"name": "lexical"}, "mode": "all_qa"},
                    "components": [{"name": "qa_accuracy"}, {"name": f"file:{root / 'chars.py'}:distinct_chars"}],
                },
                "pairs": {"min_margin": 0.05, "per_image": 1, "skip_flagged": []},
                "output_dir": str(root / "pairs"),
            }
        )
    )

    bench = root / "bench"
    shapes = write_scenes(bench / "imgs", 3)
    (bench / "shapes.json").write_text(
        json.dumps(
            [
                {
                    "image": f"imgs/{s.key}.png",
                    "answer": s.facts[0].color,
                    "prompt": f"What color is the {s.facts[0].shape}? Put the final answer in \\boxed{{}}.",
                }
                for s in shapes
            ]
        )
    )
    evaluate(
        EvalConfig.model_validate(
            {
                "benchmarks": [{"name": "shapes", "path": str(bench / "shapes.json"), "image_root": str(bench)}],
                "captioner": _captioner(tiny_models),
                "answerer": {"name": "lexical"},
                "output_dir": str(root / "ev"),
            }
        )
    )
    return {
        "root": root,
        "curate": root / "cur",
        "annotate": root / "ann",
        "annotate_bytes": root / "ann_bytes",
        "pairs": root / "pairs",
        "eval": root / "ev",
        "folder": folder,
        "bench": bench,
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _load_json(path: Path) -> Any:
    """A local JSON/JSONL file as LLaMA-Factory, ms-swift and EasyR1 load it: the ``json`` builder of datasets."""
    import datasets

    return datasets.load_dataset("json", data_files=[str(path)], split="train")


def _annotation_rows(run: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(run.glob("0*.parquet")) for r in pq.read_table(f).to_pylist()]


def _curated(run: Path, split: str) -> list[dict[str, Any]]:
    file = run / "dataset" / f"{split}.parquet"
    return pq.read_table(file).to_pylist() if file.exists() else []


# --------------------------------------------------------------------------- the consumers' documented schemas


def check_llamafactory(out: Path) -> dict[str, list[dict[str, Any]]]:
    """LLaMA-Factory ``data/README.md``: each ``dataset_info.json`` entry names a ``file_name`` in ``dataset_dir``,
    ``formatting: sharegpt`` with ``columns`` / ``tags``; user (and observation) turns at odd positions, assistant
    at even ones; an SFT conversation has an even number of turns, a ranking one (``ranking: true``) an odd number
    plus ``chosen`` / ``rejected`` assistant messages; "the number of images should be identical to the <image>
    tokens in the conversations" (videos likewise); media paths resolve against ``media_dir`` (default:
    ``dataset_dir``). Returns the rows of each dataset, loaded as LLaMA-Factory loads a local file."""
    info = json.loads((out / "dataset_info.json").read_text())
    loaded = {}
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt" and (out / entry["file_name"]).is_file(), name
        cols, tags = entry["columns"], entry["tags"]
        rows = list(_load_json(out / entry["file_name"]))
        assert rows, name
        for row in rows:
            turns = row[cols["messages"]]
            for i, turn in enumerate(turns):
                assert turn[tags["role_tag"]] == (tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"])
            if entry.get("ranking"):
                assert len(turns) % 2 == 1
                for side in ("chosen", "rejected"):
                    msg = row[cols[side]]
                    assert msg[tags["role_tag"]] == tags["assistant_tag"] and msg[tags["content_tag"]]
            else:
                assert len(turns) % 2 == 0 and turns[-1][tags["content_tag"]]
            text = "".join(t[tags["content_tag"]] for t in turns)
            for column, token in (("images", "<image>"), ("videos", "<video>")):
                media = (row.get(cols[column]) or []) if column in cols else []
                assert text.count(token) == len(media), (name, row)
                for m in media:
                    assert os.path.isfile(os.path.join(out, m)), m  # media_dir defaults to dataset_dir
        loaded[name] = rows
    return loaded


def check_ms_swift(file: Path, *, kind: str) -> list[dict[str, Any]]:
    """ms-swift ``docs/source_en/Customization/Custom-dataset.md``: ``messages`` of ``{role, content}`` (system /
    user / assistant); SFT and DPO rows end with the assistant's response, DPO rows add ``rejected_response``, GRPO
    rows hold the prompt only (their extra columns go to the reward function); ``<image>`` / ``<video>`` tags in
    the text, one per path in ``images`` / ``videos``, "URLs or paths"; a relative path is found from the working
    directory or ``ROOT_IMAGE_DIR`` (here: the export folder)."""
    rows = list(_load_json(file))
    assert rows
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert set(roles) <= {"system", "user", "assistant"} and roles[0] == "user"
        assert roles[-1] == ("user" if kind == "grpo" else "assistant")
        if kind == "dpo":
            assert isinstance(row["rejected_response"], str) and row["rejected_response"]
        text = "".join(m["content"] for m in row["messages"])
        for column, token in (("images", "<image>"), ("videos", "<video>")):
            media = row.get(column) or []
            assert text.count(token) == len(media)
            for m in media:
                assert os.path.isfile(os.path.join(file.parent, m)), m
    return rows


def check_easyr1(file: Path) -> list[dict[str, Any]]:
    """EasyR1 (``verl/utils/dataset.py``, example config ``data.prompt_key=problem``, ``answer_key=answer``,
    ``image_key=images``, ``image_dir``): ``load_dataset("json", data_files=...)`` for a ``.jsonl`` file; the
    prompt is split at ``<image>`` into text and one image slot per path; each path is joined to ``image_dir``
    and opened with Pillow; the answer goes to the reward function as ``ground_truth``."""
    rows = list(_load_json(file))
    assert rows
    for row in rows:
        assert len(row["problem"].split("<image>")) - 1 == len(row["images"]) == 1
        for p in row["images"]:
            with Image.open(os.path.join(file.parent, p)) as im:  # data.image_dir = the export folder
                im.load()
        truth = json.loads(row["answer"])
        assert truth and all(set(q) == {"question", "choices", "answer"} for q in truth)
    return rows


# --------------------------------------------------------------------------- LLaMA-Factory


def test_llamafactory_captions_are_the_pretraining_conversations(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "lf"
    report = export("llamafactory", runs["annotate"], out)
    rows = check_llamafactory(out)["caprl_captions"]
    ok = [r for r in _annotation_rows(runs["annotate"]) if r["status"] == "ok"]
    assert len(rows) == sum(len(r["captions"]) for r in ok) == len(ok) * N_CAPTIONS
    assert report.skipped == {"status failed_to_decode": 1}
    exported = {(r["messages"][-1]["content"], (r.get("images") or r.get("videos"))[0]) for r in rows}
    for r in ok:
        rel = os.path.relpath(r["source"], out)
        assert {(c, rel) for c in r["captions"]} <= exported  # every caption, media linked where it is
    first = rows[0]["messages"][0]["content"]
    assert first == "<image>" + ok[0]["prompt"] and not (out / "media").exists()
    assert any(r.get("videos") and r["messages"][0]["content"].startswith("<video>") for r in rows)
    # one caption per item
    again = export("llamafactory", runs["annotate"], out, captions="first")
    assert again.files["captions.jsonl"] == len(ok)


def test_llamafactory_qa_sft_and_pairs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "qa"
    export("llamafactory", runs["curate"], out)
    data = check_llamafactory(out)
    for split, name in (("train", "caprl_qa"), ("val", "caprl_qa_val")):
        curated = _curated(runs["curate"], split)
        questions = [q for r in curated for q in r["reward_model"]["ground_truth"]]
        rows = data[name]
        assert len(rows) == len(questions) > 0
        for row, q in zip(rows, questions):
            assert row["messages"][0]["content"].startswith("<image>" + q["question"])
            assert all(c in row["messages"][0]["content"] for c in q["choices"])
            assert row["messages"][1]["content"] == q["answer"]
    pairs_out = tmp_path / "pairs"
    export("llamafactory", runs["pairs"], pairs_out)
    info = json.loads((pairs_out / "dataset_info.json").read_text())
    assert info["caprl_pairs"]["ranking"] is True
    rows = check_llamafactory(pairs_out)["caprl_pairs"]
    pairs = pq.read_table(runs["pairs"] / "pairs.parquet").to_pylist()
    assert [(r["chosen"]["content"], r["rejected"]["content"]) for r in rows] == [
        (p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ]
    assert [os.path.normpath(os.path.join(pairs_out, r["images"][0])) for r in rows] == [
        os.path.normpath(p["images"][0]) for p in pairs
    ]


# --------------------------------------------------------------------------- ms-swift


def test_ms_swift_captions_grpo_and_dpo(runs: dict[str, Path], tmp_path: Path) -> None:
    caps = check_ms_swift(
        Path(export("ms_swift", runs["annotate"], tmp_path / "c").output) / "captions.jsonl", kind="sft"
    )
    assert len(caps) == 4 * N_CAPTIONS
    grpo = tmp_path / "g"
    export("ms_swift", runs["curate"], grpo)
    for split in ("train", "val"):
        rows = check_ms_swift(grpo / f"{split}.jsonl", kind="grpo")
        curated = _curated(runs["curate"], split)
        assert [r["ground_truth"] for r in rows] == [c["reward_model"]["ground_truth"] for c in curated]
        assert rows[0]["messages"][0]["content"] == "<image>Please describe this image in detail."
    dpo = tmp_path / "d"
    export("ms_swift", runs["pairs"], dpo)
    rows = check_ms_swift(dpo / "pairs.jsonl", kind="dpo")
    pairs = pq.read_table(runs["pairs"] / "pairs.parquet").to_pylist()
    assert [(r["messages"][-1]["content"], r["rejected_response"]) for r in rows] == [
        (p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ]


# --------------------------------------------------------------------------- EasyR1


def test_easyr1_rl_rows(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r1"
    report = export("easyr1", runs["curate"], out)
    for split in ("train", "val"):
        rows = check_easyr1(out / f"{split}.jsonl")
        curated = _curated(runs["curate"], split)
        assert [json.loads(r["answer"]) for r in rows] == [c["reward_model"]["ground_truth"] for c in curated]
        assert report.files[f"{split}.jsonl"] == len(curated)


def test_curated_video_items_keep_their_placeholder_and_column(tmp_path: Path) -> None:
    rows = scene_rows(write_scenes(tmp_path / "images", 2))
    (tmp_path / "clip.mp4").write_bytes(make_video_bytes(n_frames=12, fps=6))
    rows.append({"path": "clip.mp4", "qa": rows[0]["qa"], "caption": rows[0]["caption"]})
    curate_import(tmp_path, rows)
    export("llamafactory", tmp_path / "cur", tmp_path / "lf")
    qa = check_llamafactory(tmp_path / "lf")["caprl_qa"]
    videos = [r for r in qa if r.get("videos")]
    assert videos and all(r["messages"][0]["content"].startswith("<video>") for r in videos)
    report = export("easyr1", tmp_path / "cur", tmp_path / "r1")
    assert report.files == {"train.jsonl": 2, "train_video.jsonl": 1}  # EasyR1 reads one media kind per file
    (row,) = _jsonl(tmp_path / "r1" / "train_video.jsonl")
    assert set(row) == {"videos", "problem", "answer", "id"} and row["problem"].startswith("<video>")
    assert os.path.isfile(tmp_path / "r1" / row["videos"][0])


# --------------------------------------------------------------------------- media


def test_embedded_bytes_are_written_and_copy_makes_a_self_contained_folder(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bytes"
    report = export("llamafactory", runs["annotate_bytes"], out)
    rows = check_llamafactory(out)["caprl_captions"]
    assert len(rows) == 2 and len(report.media_written) == 2
    by_key = {r["key"]: r for r in _annotation_rows(runs["annotate_bytes"])}
    assert all(r["source"] is None for r in by_key.values())  # the run names no file: only its bytes
    written = {(out / r["images"][0]).read_bytes() for r in rows}
    assert written == {r["media_bytes"] for r in by_key.values()}
    assert sorted(Path(r["images"][0]).suffix for r in rows) == [".jpg", ".png"]  # sniffed from the bytes
    # --media copy: nothing outside the folder is named, and it still reads after a move
    copied = tmp_path / "copied"
    report = export("ms_swift", runs["annotate"], copied, media="copy")
    moved = tmp_path / "moved"
    copied.rename(moved)
    rows = check_ms_swift(moved / "captions.jsonl", kind="sft")
    assert all((r.get("images") or r.get("videos"))[0].startswith("media/") for r in rows)
    assert len(report.media_written) == 4  # 3 images + 1 video, each once for its 2 captions


# --------------------------------------------------------------------------- benchmark submissions


@pytest.mark.parametrize("fmt", ["caparena", "capmas"])
def test_dict_submissions_from_annotate_and_eval_runs(fmt: str, runs: dict[str, Path], tmp_path: Path) -> None:
    """CapArena-Auto's ``caparena_auto_eval.py`` reads ``test_model_data[img_filename]``; CapMAS's scripts read
    ``captions[image + ".jpg"]``: a JSON object keyed by image file name, one caption each."""
    report = export(fmt, runs["annotate"], tmp_path / "a")
    captions = json.loads((tmp_path / "a" / "captions.json").read_text())
    ok = {
        os.path.basename(r["source"]): r["captions"][0]
        for r in _annotation_rows(runs["annotate"])
        if r["status"] == "ok"
    }
    assert captions == ok and report.skipped == {"status failed_to_decode": 1}
    assert any("first" in n for n in report.notes)  # n=2: the first caption of each, said so
    export(fmt, runs["eval"], tmp_path / "e")
    task = json.loads((tmp_path / "e" / "shapes.json").read_text())
    media = json.loads((runs["bench"] / "shapes.json").read_text())
    assert sorted(task) == sorted(os.path.basename(m["image"]) for m in media)
    assert all(isinstance(v, str) and v for v in task.values())


def test_dict_submission_refuses_two_items_with_one_file_name(tiny_models, tmp_path: Path) -> None:
    for sub in ("x", "y"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        (tmp_path / "in" / sub / "same.png").write_bytes(make_image_bytes())
    annotate(
        AnnotateConfig.model_validate(
            {
                "input": {"path": str(tmp_path / "in")},
                "backend": _captioner(tiny_models, n=1),
                "output_dir": str(tmp_path / "ann"),
            }
        )
    )
    with pytest.raises(CaprlError, match=r"share the file name same\.png"):
        export("caparena", tmp_path / "ann", tmp_path / "sub")


def test_lmms_eval_from_log_layout(runs: dict[str, Path], tmp_path: Path) -> None:
    """lmms-eval documents no caption-file format; its ``from_log`` model reads every ``*.json`` under ``logs=``
    with ``args`` (model, model_args, limit null unless have_limits), ``model_configs.task`` and ``logs`` of
    ``{doc_id, resps}``, and answers task T's document ``doc_id`` with ``resps[0][0]``: this replays that read."""
    with pytest.raises(CaprlError, match="--lmms-task"):
        export("lmms_eval", runs["annotate"], tmp_path / "none")
    assert not (tmp_path / "none").exists()  # refused before the output was claimed
    out = tmp_path / "lm"
    export("lmms_eval", runs["annotate"], out, lmms_task="detailcaps")
    rows = _annotation_rows(runs["annotate"])
    answers = _from_log(out)["detailcaps"]
    expected = {i: r["captions"][0] for i, r in enumerate(rows) if r["status"] == "ok"}  # input order, shards of 2
    assert answers == expected
    # --doc-ids: the task's own document order
    ids = {os.path.basename(r["source"]): 10 + i for i, r in enumerate(reversed(rows))}
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    export("lmms_eval", runs["annotate"], out, lmms_task="detailcaps", doc_ids=str(tmp_path / "ids.json"))
    answers = _from_log(out)["detailcaps"]
    assert answers == {ids[os.path.basename(r["source"])]: r["captions"][0] for r in rows if r["status"] == "ok"}
    # an eval run: one file per task, named after it
    export("lmms_eval", runs["eval"], tmp_path / "ev")
    assert len(_from_log(tmp_path / "ev")["shapes"]) == 3


def _from_log(folder: Path) -> dict[str, dict[int, str]]:
    """What lmms-eval's ``from_log`` model (``lmms_eval/models/simple/from_log.py``) would answer, per task."""
    found = {}
    for file in folder.rglob("*.json"):
        data = json.loads(file.read_text())
        try:
            args, task, logs = data["args"], data["model_configs"]["task"], data["logs"]
        except (KeyError, TypeError):
            continue  # from_log skips a file it cannot read (our export.json, caprl_run.json)
        assert args["limit"] is None and args["model"] and isinstance(args["model_args"], str)
        found[task] = {entry["doc_id"]: entry["resps"][0][0] for entry in logs}
    return found


# --------------------------------------------------------------------------- refusals and the output folder


def test_refusals_name_the_fix(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        CaprlError, match=r"does not take a curate run .* use --format easyr1, llamafactory or ms_swift"
    ):
        export("caparena", runs["curate"], tmp_path / "x")
    with pytest.raises(CaprlError, match="does not take an annotate run"):
        export("easyr1", runs["annotate"], tmp_path / "x")
    with pytest.raises(CaprlError, match="did you mean 'llamafactory'"):
        export("llamafactroy", runs["annotate"], tmp_path / "x")
    with pytest.raises(CaprlError, match="not a caprl run"):
        export("llamafactory", runs["folder"], tmp_path / "x")
    with pytest.raises(CaprlError, match="--lmms-task does not apply to --format llamafactory"):
        export("llamafactory", runs["annotate"], tmp_path / "x", lmms_task="detailcaps")
    with pytest.raises(CaprlError, match="holds one caption per image"):
        export("capmas", runs["annotate"], tmp_path / "x", captions="all")
    with pytest.raises(CaprlError, match="--captions picks among"):
        export("llamafactory", runs["curate"], tmp_path / "x", captions="first")
    with pytest.raises(CaprlError, match="exports are written to a local folder"):
        export("llamafactory", runs["annotate"], "memory://x")
    assert not (tmp_path / "x").exists()  # nothing was claimed or written by a refused export


def test_output_is_new_empty_or_a_previous_export_and_reexport_replaces_only_its_files(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CaprlError, match="not a caprl run"):
        export("llamafactory", runs["annotate"], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(CaprlError, match="holds a caprl curate run"):
        export("llamafactory", runs["annotate"], runs["curate"])
    out = tmp_path / "out"
    export("llamafactory", runs["annotate_bytes"], out)
    (out / "user.txt").write_text("added by hand")
    report = export("ms_swift", runs["annotate"], out)  # another format into the same export folder
    names = sorted(p.name for p in out.iterdir())
    assert names == ["caprl_run.json", "captions.jsonl", "export.json", "user.txt"]  # the old media/ went
    assert json.loads((out / "export.json").read_text())["files"] == report.files == {"captions.jsonl": 8}


def test_cli_export_and_a_refusal(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = runner.invoke(app, ["data", "export", "--format", "easyr1", str(runs["curate"]), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "train.jsonl" in res.output and (out / "train.jsonl").is_file()
    res = runner.invoke(app, ["data", "export", "-f", "caparena", str(runs["curate"]), "-o", str(tmp_path / "n")])
    assert res.exit_code == 2 and "does not take a curate run" in res.output and "Traceback" not in res.output
