"""caprl eval export-official: an eval run's captions written as the official Eval_CapRL.py stage 2 reads them
(``intermediate_generations_<tag>_step<N>.jsonl``), read back with the layout's own keys: every one of the n
captions per item, the benchmark row as it stands in the benchmark file, and the prompt stage 2 rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from media_factory import make_video_bytes
from official_layouts import STAGE2_CAPTION_SENTENCE, STAGE2_IMAGE_PREFIX, read_stage2
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run
from caprl_kit.synthetic import write_scenes

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """An official-layout image benchmark (with a field stage 2 never reads), one in caprl's own layout (question +
    options, no prompt) and a video benchmark."""
    root = tmp_path_factory.mktemp("bench")
    scenes = write_scenes(root / "bench_image_folder" / "lmm_eval_shapes", 4)
    rows = [
        {
            "image": f"bench_image_folder/lmm_eval_shapes/{s.key}.png",
            "prompt": f"{STAGE2_IMAGE_PREFIX}What color is the {s.facts[0].shape}? Put the final answer in "
            "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n",
            "answer": s.facts[0].color,
            "category": f"cat{i}",
        }
        for i, s in enumerate(scenes)
    ]
    (root / "json_file").mkdir()
    (root / "json_file" / "lmm_eval_shapes.json").write_text(json.dumps(rows))
    own = [
        {
            "image": f"bench_image_folder/lmm_eval_shapes/{s.key}.png",
            "question": "Which shape is shown?",
            "options": ["circle", "square", "triangle"],
            "answer": "A",
        }
        for s in scenes[:2]
    ]
    (root / "own_mcq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own))
    (root / "videos").mkdir()
    (root / "videos" / "v0.mp4").write_bytes(make_video_bytes(n_frames=12, fps=6))
    (root / "videos" / "clips.jsonl").write_text(
        json.dumps({"video": "v0.mp4", "question": "What moves?", "options": ["a bar", "nothing"], "answer": "A"})
        + "\n"
    )
    return root


def benchmarks(bench: Path, video: bool = False) -> list[dict]:
    out = [
        {"name": "shapes", "path": str(bench / "json_file" / "lmm_eval_shapes.json"), "image_root": str(bench)},
        {"name": "own_mcq", "path": str(bench / "own_mcq.jsonl")},
    ]
    if video:
        out.append({"name": "clips", "path": str(bench / "videos" / "clips.jsonl"), "media_type": "video"})
    return out


def test_every_caption_of_a_captioned_run_in_the_official_stage2_layout(
    tiny_models, bench: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    cfg = EvalConfig.model_validate(
        {
            "benchmarks": benchmarks(bench),
            "captioner": {
                "name": "transformers",
                "model": str(tiny_models["captioner"]),
                "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 6, "seed": 0},
            },
            "answerer": {"name": "lexical"},
            "sharding": {"shard_size": 3},
            "output_dir": str(out),
        }
    )
    run(cfg)
    done = runner.invoke(app, ["eval", "export-official", str(out), "--step", "1200", "--tag", "shapes=Shapes"])
    assert done.exit_code == 0, done.output
    official = out / "official"
    assert sorted(p.name for p in official.glob("*.jsonl")) == [
        "intermediate_generations_Shapes_step1200.jsonl",
        "intermediate_generations_own_mcq_step1200.jsonl",
    ]
    # the captions the run made, per media path (captions/<task>/ shards)
    made = {r["key"]: r["captions"] for r in pl.read_parquet(str(out / "captions" / "shapes" / "*.parquet")).to_dicts()}
    source_rows = json.loads((bench / "json_file" / "lmm_eval_shapes.json").read_text())
    items = read_stage2(official / "intermediate_generations_Shapes_step1200.jsonl")
    assert len(items) == len(source_rows) == 4
    for item, row in zip(items, source_rows, strict=True):
        assert item["original_sample"] == row  # the benchmark row as the file holds it, the unread field too
        caps = item["generated_captions"]
        assert len(caps) == 3 and all(isinstance(c, str) for c in caps)
        assert caps == made[str(bench / row["image"])]
        # what stage 2 does with it: the image prefix becomes the caption sentence, once per caption
        prompts = [
            item["original_sample"]["prompt"].replace(STAGE2_IMAGE_PREFIX, STAGE2_CAPTION_SENTENCE.format(cap=c))
            for c in caps
        ]
        assert all(p.startswith("<|im_start|>user\nHere is a detailed caption of an image: ") for p in prompts)
        assert item["original_sample"]["answer"] == row["answer"]
    own = read_stage2(official / "intermediate_generations_own_mcq_step1200.jsonl")
    assert len(own) == 2 and all(len(i["generated_captions"]) == 3 for i in own)
    prompt = own[0]["original_sample"]["prompt"]  # built as the official files carry theirs
    assert prompt.startswith(STAGE2_IMAGE_PREFIX + "Which shape is shown?\nA. circle\nB. square\nC. triangle")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert own[0]["original_sample"]["question"] == "Which shape is shown?"  # the row's own fields are kept
    manifest = json.loads((official / "official_export.json").read_text())
    shapes = next(f for f in manifest["files"] if f["task"] == "shapes")
    assert shapes["items"] == 4 and shapes["captions_per_item"] == [3, 3] and shapes["not_captioned"] == 0
    assert "--tag Shapes --step 1200" in shapes["stage2"]
    # a second export writes over the first; a folder of the user's is refused and left as it was
    again = runner.invoke(app, ["eval", "export-official", str(out), "--step", "1200", "--tag", "shapes=Shapes"])
    assert again.exit_code == 0, again.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = runner.invoke(app, ["eval", "export-official", str(out), "--output", str(mine)])
    assert refused.exit_code == 2 and "not a caprl run" in " ".join(refused.output.split()), refused.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_precomputed_captions_with_n_per_line_and_the_refusals(bench: Path, tmp_path: Path) -> None:
    """A precomputed caption file in annotate's captions.jsonl form with n > 1 (``caption`` + ``captions``): eval
    reads every caption of a line, the export writes them all; an item the file does not caption is left out and
    counted; the video benchmark is named as not exported; a folder that is not an eval run is refused."""
    shapes = json.loads((bench / "json_file" / "lmm_eval_shapes.json").read_text())
    lines = [
        {
            "image": r["image"],
            "caption": f"A {r['answer']} shape.",
            "captions": [f"A {r['answer']} shape.", "A shape.", f"Something {r['answer']}."],
        }
        for r in shapes[:3]
    ]
    captions = bench / "captions_n3.jsonl"
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "ev"
    cfg = EvalConfig.model_validate(
        {
            "benchmarks": benchmarks(bench, video=True),
            "answerer": {"name": "lexical"},
            "captions": {"path": str(captions)},
            "output_dir": str(out),
        }
    )
    run(cfg)
    samples = [json.loads(x) for x in next(out.glob("samples_shapes_*.jsonl")).read_text().splitlines()]
    read = [(s["sample_id"], s["caption"]) for s in samples if s["status"] != "no_caption"]  # each one answered
    assert read == [(f"shapes_{i:05d}", c) for i, x in enumerate(lines) for c in x["captions"]]
    done = runner.invoke(app, ["eval", "export-official", str(out), "-o", str(tmp_path / "off")])
    assert done.exit_code == 0, done.output
    assert "clips not exported" in " ".join(done.output.split())
    items = read_stage2(tmp_path / "off" / "intermediate_generations_shapes_step400.jsonl")
    assert [i["generated_captions"] for i in items] == [x["captions"] for x in lines]
    manifest = json.loads((tmp_path / "off" / "official_export.json").read_text())
    shapes_file = next(f for f in manifest["files"] if f["task"] == "shapes")
    assert shapes_file["not_captioned"] == 1 and "clips" in manifest["skipped"]
    refused = runner.invoke(app, ["eval", "export-official", str(bench)])
    assert refused.exit_code == 2 and "not a caprl run" in " ".join(refused.output.split()), refused.output
