"""The video layouts' pieces: each benchmark's answer extraction (VLMEvalKit's rules), the judges' verdicts, a bad
row refused naming the file and the row, and the config keys refused where they mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caprl_kit.errors import CaprlError, ConfigError
from caprl_kit.evaluate.config import BenchmarkConfig
from caprl_kit.evaluate.data import load_benchmark
from caprl_kit.evaluate.judge import MMBENCH_VIDEO_JUDGE, MMVU_JUDGE, json_objects
from caprl_kit.evaluate.video_benchmarks import (
    infer_choice,
    iou,
    letter_of,
    time_spans,
    tomato_letter,
    video_mme_letter,
)

COLORS = {"A": "red", "B": "blue", "C": "green"}


@pytest.mark.parametrize(("answer", "letter"), [
    ("The answer is B.", "B"),
    ("C", "C"),
    ("The best answer is D", "D"),
    ("Based on the caption, the answer is C.", "B"),  # the first capital A-D, as Video-MME reads it ("Based")
    ("none of the options.", None),
])
def test_video_mme_takes_the_first_capital_a_to_d(answer: str, letter: str | None) -> None:
    assert video_mme_letter(answer) == letter


@pytest.mark.parametrize(("answer", "letter"), [
    ("The answer is B.", "B"),  # the lone letter among the last five words
    ("(C) green", "C"),
    ("B is wrong and so is C", None),  # two letters: none by letter; no option text either
    ("It is blue.", "B"),  # no letter: the one option text the answer holds
    ("red or blue", None),  # two option texts
    ("Cannot determine the answer", "Z"),  # a refusal
])
def test_mvbench_infers_the_letter_then_the_option_text(answer: str, letter: str | None) -> None:
    assert infer_choice(answer, dict(COLORS)) == letter


@pytest.mark.parametrize(("answer", "letter"), [
    ("Answer: C", "C"),
    ("I think (B), but the Answer: D", "D"),  # "Answer: X" first, the last one
    ("The answer is E.", "E"),
    ("[A]", "A"),
    ("b", "B"),  # upper-cased
    ("I cannot tell.", None),
])
def test_mmvu_letters(answer: str, letter: str | None) -> None:
    assert letter_of(answer, "ABCDE") == letter


def test_tomato_falls_back_to_an_option_index_then_its_text() -> None:
    options = {"A": "left", "B": "right", "C": "up"}
    assert tomato_letter("The answer is F.", options) == "F"
    assert tomato_letter("option 2", options) == "C"  # 0-5 is an option index
    assert tomato_letter("it rolls to the right", options) == "B"
    assert tomato_letter("it rolls", options) is None


def test_timelens_reads_spans_as_timelens_does() -> None:
    assert time_spans("The event happens in 2.5 - 7 seconds.") == [(2.5, 7.0)]
    assert time_spans("from 00:01:05 to 00:01:10") == [(65.0, 70.0)]  # clock times first, in pairs
    assert time_spans("between 3 to 4.5") == [(3.0, 4.5)]
    assert time_spans("around 1 and 2 then 3") == [(1.0, 2.0)]  # any numbers, in pairs
    assert time_spans("no idea") == []
    assert iou((0.0, 2.0), (1.0, 3.0)) == pytest.approx(1 / 3)
    assert iou((0.0, 2.0), (2.0, 1.0)) == 0.0  # a span that does not end after it starts


def test_the_judges_verdicts() -> None:
    assert list(json_objects('x {"a": 1} y {bad} {"b": {"c": 2}}')) == [{"a": 1}, {"b": {"c": 2}}]
    assert MMVU_JUDGE.verdict('Sure. {"extracted_answer": "9.8 m/s2", "correct": true}') == ("9.8 m/s2", 1.0)
    assert MMVU_JUDGE.verdict('{"extracted_answer": "x", "correct": "false"}') == ("x", 0.0)
    assert MMVU_JUDGE.verdict("It is correct.") == ("", 0.0)  # no JSON: a wrong answer, as VLMEvalKit has it
    assert MMBENCH_VIDEO_JUDGE.verdict(" 2\n") == (None, 2 / 3)
    for reply in ("2.5", "4", "three", ""):
        assert MMBENCH_VIDEO_JUDGE.verdict(reply) == (None, None), reply
    request = MMBENCH_VIDEO_JUDGE.request("Q?", "gold", "said", sampling=None)  # type: ignore[arg-type]
    assert request.messages[-1]["content"] == "Question: Q?\nGroundtruth answer: gold\nCandidate answer: said\n" \
                                               "Your response: "


def _tsv(path: Path, header: list[str], *rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in (header, *rows)) + "\n")
    return path


BAD_ROWS = [
    ("videomme", "Video-MME.tsv", ["index", "video", "candidates", "question", "answer"],
     ["0", "v", "['A. x', 'B. y']", "Q?", "C"], "'answer' 'C' is none of the candidates' letters"),
    ("mvbench", "MVBench.tsv", ["index", "prefix", "video", "candidates", "question", "answer"],
     ["0", "video/", "a.mp4", "not a list", "Q?", "x"], "'candidates' is not a list"),
    ("tomato", "TOMATO.tsv", ["index", "id", "video", "choices", "question", "answer"],
     ["0", "c:0", "videos/human/a.mp4", '{"A": "1"}', "", "A"], "'question' is empty"),
    ("mmbench_video", "MMBench-Video.tsv", ["index", "video", "video_path", "question", "answer", "dimensions"],
     ["0", "v", "./video/v.mp4", "Q?", "a", "['Juggling']"], "'dimensions' holds 'Juggling', not one of MMBench-Video's capabilities"),
]


@pytest.mark.parametrize(("layout", "name", "header", "row", "why"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_a_bad_row_is_refused_naming_the_file_and_the_row(tmp_path: Path, layout: str, name: str, header: list[str],
                                                          row: list[str], why: str) -> None:
    good = {"videomme": ["1", "w", "['A. x', 'B. y']", "Q?", "A"]}.get(layout)
    path = _tsv(tmp_path / name, header, *([good] if good else []), row)
    with pytest.raises(CaprlError) as err:
        load_benchmark(BenchmarkConfig(name="b", path=str(path), layout=layout))
    assert f"benchmark b: {path} row {1 if good else 0} ({layout} layout): {why}" in str(err.value)


def test_json_layouts_refuse_bad_rows_too(tmp_path: Path) -> None:
    mmvu = tmp_path / "MMVU" / "data" / "validation.json"
    mmvu.parent.mkdir(parents=True)
    mmvu.write_text(json.dumps([{"id": "x", "video": "https://h/videos/Art/1.mp4", "question": "Q?", "answer": "A",
                                 "question_type": "true-false", "choices": {}}]))
    with pytest.raises(CaprlError, match=r"row 0 \(mmvu layout\): 'question_type' 'true-false' is neither"):
        load_benchmark(BenchmarkConfig(name="m", path=str(mmvu), layout="mmvu"))
    timelens = tmp_path / "bench.json"  # no subset in its name, no SUB_DATASET
    timelens.write_text(json.dumps({"v": {"duration": 3, "spans": [[0, 1]], "queries": ["q"]}}))
    with pytest.raises(CaprlError, match="row 0 \\(timelens layout\\): names no TimeLens-Bench subset"):
        load_benchmark(BenchmarkConfig(name="t", path=str(timelens), layout="timelens"))
    backwards = tmp_path / "charades-timelens.json"
    backwards.write_text(json.dumps({"v": {"duration": 3, "spans": [[0, 1], [2, 1]], "queries": ["q", "r"]}}))
    with pytest.raises(CaprlError, match=r"row 1 \(timelens layout\): the gold span \[2.0, 1.0\] does not end"):
        load_benchmark(BenchmarkConfig(name="t", path=str(backwards), layout="timelens"))


def test_each_layout_finds_its_videos_under_image_root(tmp_path: Path) -> None:
    path = _tsv(tmp_path / "Video-MME.tsv", ["index", "video", "video_path", "candidates", "question", "answer"],
                ["0", "abc", "./video/abc.mp4", "['A. x', 'B. y']", "Q?", "A"])
    beside = load_benchmark(BenchmarkConfig(name="v", path=str(path), layout="videomme"))
    elsewhere = load_benchmark(BenchmarkConfig(name="v", path=str(path), layout="videomme", image_root="/data/vmme"))
    assert (beside[0].media, elsewhere[0].media) == (str(tmp_path / "video" / "abc.mp4"), "/data/vmme/abc.mp4")


def _eval(**cfg: object) -> None:
    from caprl_kit.config import validate
    from caprl_kit.evaluate.config import EvalConfig

    validate(EvalConfig, {"kind": "eval", **cfg})


def test_keys_that_mean_nothing_with_the_video_layouts_are_refused() -> None:
    video = {"name": "v", "path": "Video-MME.tsv", "layout": "videomme"}
    refusals = [
        ({"benchmarks": [{**video, "media_type": "image"}]}, "benchmarks.0.media_type"),
        ({"benchmarks": [{**video, "scorer": "mcq"}]}, "benchmarks.0.scorer"),
        ({"benchmarks": [video], "judge": {}}, "judge"),  # nothing open-ended to judge
        ({"benchmarks": [video], "compat": "official"}, "compat"),  # no image benchmark uses the official scorers
        ({"benchmarks": [video], "captions_from": "runs/a", "captions": {"path": "c.jsonl"}}, "captions_from"),
        ({"benchmarks": [video], "captions_from": "runs/a", "output_dir": "runs/a/"}, "captions_from"),
        ({"benchmarks": [{**video, "layout": "mmvu"}], "judge": {"backend": {"sampling": {"n": 2}}}},
         "judge.backend.sampling.n"),
    ]
    for cfg, key in refusals:
        with pytest.raises(ConfigError) as err:
            _eval(**cfg)
        assert [i.path for i in err.value.issues] == [key], (cfg, err.value)
    _eval(benchmarks=[{**video, "layout": "mmvu"}], judge={"skip": True}, captions_from="runs/a")  # accepted
