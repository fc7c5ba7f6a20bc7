"""utility@k through caprl eval: a curated set of one-shape scenes with precomputed captions whose information sits
behind a known number of filler words, so the utility rises cut by cut as the lexical answerer gets to read each
scene's facts; the results, the summary metrics and the HTML report (also side by side with captions that say it
first); counted in a tokenizer's tokens; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprl_kit.config import validate
from caprl_kit.errors import CaprlError, ConfigError
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run
from caprl_kit.evaluate.report import compare
from caprl_kit.length_cuts import CaptionCutter, load_cutter
from caprl_kit.synthetic import write_scenes
from curated_sets import curate_import, scene_rows

CUTS = [128, 256, 512, 1024]
#: filler words before each scene's caption: its facts end within the 1st, 2nd, 3rd, 4th cut (a caption is 9 words)
LEADS = [100, 200, 400, 900]
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed eiusmod".split()


def filler(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("utility_at_k")
    scenes = write_scenes(root / "images", len(LEADS), seed=3, max_shapes=1)
    dataset = curate_import(root, scene_rows(scenes)) / "train.parquet"
    files = {}
    for name, text in (("late", lambda s, n: f"{filler(n)}. {s.caption()}"),
                       ("first", lambda s, n: f"{s.caption()} {filler(n)}")):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(
            json.dumps({"image": str(root / "images" / f"{s.key}.png"), "caption": text(s, n)}) + "\n"
            for s, n in zip(scenes, LEADS)))
    return {"root": root, "scenes": scenes, "dataset": dataset, **files}


def config(task: dict, captions: str, out: Path, dataset: Path | None = None, faithfulness: dict | None = None,
           **qa_utility) -> EvalConfig:
    return validate(EvalConfig, {
        "qa_utility": {"dataset": str(dataset or task["dataset"]), "qa": {"answerer": {"name": "lexical"}},
                       **qa_utility},
        "captions": {"path": str(task[captions])}, "answerer": {"name": "lexical"}, "faithfulness": faithfulness,
        "label": captions, "output_dir": str(out)})


def test_utility_rises_with_k_when_the_information_sits_late(task: dict, tmp_path: Path) -> None:
    report = run(config(task, "late", tmp_path / "late"))
    res = json.loads((tmp_path / "late" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    u = res["utility_at_k"]
    assert u["unit"] == "words" and u["tokenizer"] is None  # precomputed captions: no captioner tokenizer
    # a scene's facts are read once the cut reaches them: 1, 2, 3, then 4 of the 4 scenes answered in full
    expected = [sum(lead + 9 <= k for lead in LEADS) / len(LEADS) for k in CUTS]
    assert [c["k"] for c in u["cuts"]] == CUTS
    assert [c["utility"] for c in u["cuts"]] == expected == [0.25, 0.5, 0.75, 1.0]
    assert [c["n_cut"] for c in u["cuts"]] == [sum(lead + 9 > k for lead in LEADS) for k in CUTS]
    assert u["full"] == res["m_acc"] == 1.0 and u["n_captions"] == len(LEADS)
    assert u["area"] == pytest.approx((0.375 + 0.625 + 0.875) / 3)  # trapezoids over log2 k = 7..10, span 3
    assert u["mean_length"] == pytest.approx(sum(lead + 9 for lead in LEADS) / len(LEADS))
    assert u["claim_precision"] is None  # faithfulness off
    for c in u["cuts"]:
        assert report.metrics[f"qa_utility utility@{c['k']}"] == c["utility"]
    assert report.metrics["qa_utility utility@k area"] == u["area"]
    html = (tmp_path / "late" / "report.html").read_text()
    assert "utility-at-k" in html and "@128" in html and "@1024" in html and "utility@k over log2 k" in html

    # the same facts said first: every cut keeps them, nothing is answered again for the short ones
    run(config(task, "first", tmp_path / "first"))
    first = json.loads((tmp_path / "first" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    assert [c["utility"] for c in first["utility_at_k"]["cuts"]] == [1.0] * 4 and first["utility_at_k"]["area"] == 1.0
    side = compare([str(tmp_path / "late"), str(tmp_path / "first")])
    table = side[side.index("utility-at-k"):]
    assert "<td>late</td>" in table and "<td>first</td>" in table and "0.6250" in table and "1.0000" in table


def test_claim_precision_beside_utility_at_k(task: dict, tmp_path: Path) -> None:
    """With faithfulness on, the curve carries the captions' claim precision (checked against the curated rows'
    reference captions: the filler is a claim the reference does not support)."""
    table = pq.read_table(task["dataset"])
    by_key = {s.key: s for s in task["scenes"]}
    refs = [by_key[Path(images[0]).stem].caption() for images in table.column("images").to_pylist()]
    with_refs = tmp_path / "with_refs.parquet"
    pq.write_table(table.append_column("reference", pa.array(refs)), with_refs)
    run(config(task, "late", tmp_path / "ev", with_refs, {"verifier": {"reference_column": "reference"}}))
    res = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    precision = res["faithfulness"]["claim_precision"]
    assert 0.0 < precision < 1.0 and res["utility_at_k"]["claim_precision"] == precision
    assert "0.6250" in (tmp_path / "ev" / "report.html").read_text()


def test_counted_in_the_tokenizer_s_tokens(task: dict, tiny_models, tmp_path: Path) -> None:
    tokenizer = str(tiny_models["captioner"])
    cutter = load_cutter(tokenizer, key="qa_utility.length_tokenizer", required=True)
    text = f"{filler(40)}. {task['scenes'][0].caption()}"
    assert cutter.unit == "tokens" and cutter.count(text) > 40
    assert cutter.count(cutter.cut(text, 17)) == 17 and text.startswith(cutter.cut(text, 17))
    assert cutter.cut(text, 10_000) == text
    run(config(task, "late", tmp_path / "tok", length_tokenizer=tokenizer, length_cuts=[64, 2048]))
    u = json.loads((tmp_path / "tok" / "results_latest.json").read_text())["tasks"]["qa_utility"]["utility_at_k"]
    assert u["unit"] == "tokens" and u["tokenizer"] == tokenizer
    lengths = [cutter.count(f"{filler(n)}. {s.caption()}") for s, n in zip(task["scenes"], LEADS)]
    assert u["mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    assert [c["n_cut"] for c in u["cuts"]] == [sum(n > k for n in lengths) for k in (64, 2048)]
    # the facts close each caption: a scene is answered when its caption is not cut
    assert [c["utility"] for c in u["cuts"]] == [sum(n <= k for n in lengths) / len(lengths) for k in (64, 2048)]
    assert u["full"] == 1.0 and u["cuts"][0]["utility"] < u["cuts"][1]["utility"]


def test_off_and_refusals(task: dict, tmp_path: Path) -> None:
    report = run(config(task, "late", tmp_path / "off", length_cuts=[]))
    res = json.loads((tmp_path / "off" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    assert res["utility_at_k"] is None and not [k for k in report.metrics if "utility@" in k]
    with pytest.raises(ConfigError, match=r"qa_utility.length_tokenizer: is not used: utility@k is off"):
        config(task, "late", tmp_path / "x", length_cuts=[], length_tokenizer="gpt2")
    with pytest.raises(ConfigError, match=r"qa_utility.length_cuts: repeats a length"):
        config(task, "late", tmp_path / "x", length_cuts=[128, 128])
    with pytest.raises(ConfigError, match=r"qa_utility.length_cuts.0"):
        config(task, "late", tmp_path / "x", length_cuts=[0])
    missing = tmp_path / "no-such-model"
    with pytest.raises(CaprlError, match=r"qa_utility.length_tokenizer"):
        run(config(task, "late", tmp_path / "bad", length_tokenizer=str(missing)))
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    assert CaptionCutter().cut("one  two three", 2) == "one  two"
