"""caprl eval's faithfulness column (off by default): per task claim precision and hallucinated-claim rate of the
captions, checked against the curated rows' reference captions (model-free) or the images (a tiny VLM); a dataset
without the reference column and a benchmark with reference evidence are refused before anything is written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.config import load_config
from caprl_kit.errors import CaprlError, ConfigError
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run
from caprl_kit.synthetic import COLORS, Scene, ShapeFact, write_scenes
from curated_sets import curate_import, scene_rows


def falsified(scene: Scene, rng: random.Random) -> str:
    """The scene's caption with the first shape's colour changed: one false claim."""
    f = scene.facts[0]
    wrong = ShapeFact(f.shape, rng.choice([c for c in COLORS if c != f.color]), f.position)
    return Scene(scene.key, [wrong, *scene.facts[1:]]).caption()


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    """A curated set of 5 scenes with a reference-caption column, and precomputed captions: per image the true
    caption and its falsified twin."""
    root = tmp_path_factory.mktemp("faith")
    scenes = write_scenes(root / "images", 5, seed=2, max_shapes=3)
    dataset = curate_import(root, scene_rows(scenes))
    table = pq.read_table(dataset / "train.parquet")
    by_key = {s.key: s for s in scenes}
    refs = [by_key[Path(images[0]).stem].caption() for images in table.column("images").to_pylist()]
    with_refs = root / "with_refs.parquet"
    pq.write_table(table.append_column("reference", pa.array(refs)), with_refs)
    rng = random.Random(0)
    captions = root / "captions.jsonl"
    captions.write_text("".join(
        json.dumps({"image": str(root / "images" / f"{s.key}.png"), "caption": c}) + "\n"
        for s in scenes for c in (s.caption(), falsified(s, rng))))
    return {"root": root, "scenes": scenes, "plain": dataset / "train.parquet", "with_refs": with_refs,
            "captions": captions}


def config(task: dict, out: Path, dataset: Path, faithfulness: dict | None) -> EvalConfig:
    return EvalConfig.model_validate({
        "qa_utility": {"dataset": str(dataset), "qa": {"answerer": {"name": "lexical"}}},
        "captions": {"path": str(task["captions"])}, "answerer": {"name": "lexical"},
        "faithfulness": faithfulness, "output_dir": str(out)})


def test_claim_precision_and_hallucinated_claim_rate_per_task(task: dict, tmp_path: Path) -> None:
    cfg = config(task, tmp_path / "ev", task["with_refs"], {"verifier": {"reference_column": "reference"}})
    report = run(cfg)
    res = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    f = res["faithfulness"]
    sizes = [len(s.facts) for s in task["scenes"]]
    # every true caption's claims supported; each twin: one false claim among its shapes' claims
    assert f["n_captions"] == 10 and f["n_unverified_captions"] == 0
    assert f["claim_precision"] == pytest.approx((len(sizes) + sum((n - 1) / n for n in sizes)) / 10)
    assert f["hallucinated_claim_rate"] == pytest.approx(len(sizes) / (2 * sum(sizes)))
    assert f["unknown_rate"] == 0.0 and f["claims_per_caption"] == pytest.approx(sum(sizes) / 5)
    assert f["requests_per_caption"] == f["claims_per_caption"] and f["tokens_per_caption"] > 0
    assert len(f["unsupported_examples"]) == 5
    assert all(e["item"].endswith(".png") and e["claim"] for e in f["unsupported_examples"])
    assert report.metrics["qa_utility claim precision"] == f["claim_precision"]
    assert report.metrics["qa_utility hallucinated-claim rate"] == f["hallucinated_claim_rate"]


def test_off_by_default(task: dict, tmp_path: Path) -> None:
    report = run(config(task, tmp_path / "ev", task["plain"], None))
    res = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    assert res["faithfulness"] is None and res["m_acc"] is not None
    assert not [k for k in report.metrics if "claim" in k]


def test_a_dataset_without_the_reference_column_is_refused_before_anything_is_written(task: dict,
                                                                                       tmp_path: Path) -> None:
    with pytest.raises(CaprlError, match="faithfulness.verifier.reference_column: .* has no 'caption' column"):
        run(config(task, tmp_path / "ev", task["plain"], {}))
    assert not (tmp_path / "ev").exists()


def test_reference_evidence_with_benchmarks_is_refused() -> None:
    with pytest.raises(ConfigError, match="faithfulness.verifier.evidence: is reference, but benchmark rows"):
        load_config("eval/prism_image", ["faithfulness={}"])
    media = "{verifier: {evidence: media, backend: {name: openai, model: judge}}}"
    assert load_config("eval/prism_image", [f"faithfulness={media}"]).faithfulness.verifier.evidence == "media"


def test_media_evidence_with_the_tiny_vlm(task: dict, tiny_models, tmp_path: Path) -> None:
    vlm = {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 8}
    report = run(config(task, tmp_path / "ev", task["plain"], {"verifier": {"evidence": "media", "backend": vlm}}))
    f = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]["faithfulness"]
    sizes = [len(s.facts) for s in task["scenes"]]
    assert f["n_captions"] == 10 and f["claims_per_caption"] == pytest.approx(sum(sizes) / 5)
    assert f["requests_per_caption"] == f["claims_per_caption"]  # one check per claim, the rules splitter asks none
    assert f["tokens_per_caption"] > 20 * f["claims_per_caption"]  # the image's tokens in every check
    verified = f["hallucinated_claim_rate"] is not None
    assert ("qa_utility hallucinated-claim rate" in report.metrics) == verified
