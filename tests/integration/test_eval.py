"""caprl eval end to end on the tiny models: an image benchmark in the official file layout and a video MCQ
benchmark, a resumed run reusing cached captions, the held-out QA utility, and a two-model HTML report opened in
headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.metrics import scorer_for
from caprl_kit.evaluate.pipeline import run
from caprl_kit.synthetic import write_scenes
from curated_sets import curate_import, scene_rows
from media_factory import make_video_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    scenes = write_scenes(root / "bench_image_folder" / "lmm_eval_shapes", 5)
    rows = [{"image": f"bench_image_folder/lmm_eval_shapes/{s.key}.png",
             "prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                       f"What color is the {s.facts[0].shape}? Put the final answer in \\boxed{{}}.<|im_end|>\n"
                       "<|im_start|>assistant\n",
             "answer": s.facts[0].color} for s in scenes]
    (root / "json_file").mkdir()
    (root / "json_file" / "lmm_eval_shapes.json").write_text(json.dumps(rows))
    (root / "videos").mkdir()
    vrows = []
    for i in range(3):
        (root / "videos" / f"v{i}.mp4").write_bytes(make_video_bytes(n_frames=12 + 4 * i, fps=6))
        vrows.append({"video": f"v{i}.mp4", "question": "What moves in the video?",
                      "options": ["a bar", "a ball", "a car", "nothing"], "answer": "A"})
    (root / "videos" / "mvbench_tiny.jsonl").write_text("\n".join(json.dumps(r) for r in vrows) + "\n")
    return root


def cfg_for(tiny: dict, bench: Path, out: Path, label: str) -> EvalConfig:
    return EvalConfig.model_validate({
        "label": label,
        "benchmarks": [
            {"name": "shapes", "path": str(bench / "json_file" / "lmm_eval_shapes.json"), "image_root": str(bench)},
            {"name": "mvbench_tiny", "path": str(bench / "videos" / "mvbench_tiny.jsonl"), "media_type": "video"},
        ],
        "captioner": {"name": "transformers", "model": str(tiny["captioner"]),
                      "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 10, "seed": 0}},
        "answerer": {"name": "transformers", "model": str(tiny["answerer"]),
                     "sampling": {"n": 1, "temperature": 1.0, "max_tokens": 8, "seed": 0}},
        "media": {"video_max_frames": 4}, "sharding": {"shard_size": 2}, "output_dir": str(out),
    })


def test_image_and_video_benchmarks_with_resume(tiny_models, bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    report = run(cfg_for(tiny_models, bench, out, "tiny-a"))
    results = json.loads((out / "results_latest.json").read_text())
    assert set(results["tasks"]) == {"shapes", "mvbench_tiny"}
    shapes, video = results["tasks"]["shapes"], results["tasks"]["mvbench_tiny"]
    assert shapes["n_samples"] == 5 and shapes["metric"] == "math"
    assert video["n_samples"] == 3 and video["metric"] == "mcq"
    for t in (shapes, video):
        assert 0.0 <= t["m_acc"] <= t["bon"] <= 1.0
    samples = [json.loads(line) for line in next(out.glob("samples_shapes_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 5 * 2 and {s["caption_index"] for s in samples} == {0, 1}
    assert samples[0]["question"].startswith("What color is the")  # the official prompt, prefix replaced
    captions = sorted((out / "captions" / "shapes").glob("*.parquet"))
    assert len(captions) == 3
    # the captions' hygiene: the truncated rate is the share of captions the engine cut at max_tokens
    import polars as pl

    reasons = [f for fs in pl.read_parquet(captions)["finish_reasons"].to_list() for f in fs]
    assert shapes["caption_monitors"]["truncated"] == pytest.approx(reasons.count("length") / len(reasons))
    assert set(shapes["caption_monitors"]) == {"truncated", "repetitive", "boilerplate_opener", "meta_ending", "empty"}
    if reasons.count("length"):
        assert report.metrics["shapes captions truncated"] == shapes["caption_monitors"]["truncated"]
    stamps = {p: p.stat().st_mtime_ns for p in captions}
    # resume: stage-1 captions are reused, not regenerated
    again = run(cfg_for(tiny_models, bench, out, "tiny-a"))
    assert {p: p.stat().st_mtime_ns for p in captions} == stamps
    assert again.metrics["shapes M_Acc"] == report.metrics["shapes M_Acc"]
    # a compat switch rescores without re-answering or re-captioning, with the official routing (by the file's path:
    # the video MCQs through math, as the official evaluator has no letter scorer)
    answers = sorted((out / "answers").rglob("*.parquet"))
    answer_stamps = {p: p.stat().st_mtime_ns for p in answers}
    official = cfg_for(tiny_models, bench, out, "tiny-a").model_copy(update={"compat": "official"})
    run(official)
    assert {p: p.stat().st_mtime_ns for p in captions} == stamps
    assert answers and {p: p.stat().st_mtime_ns for p in answers} == answer_stamps
    rescored = json.loads((out / "results_latest.json").read_text())
    video_path = str(bench / "videos" / "mvbench_tiny.jsonl")  # 'math' unless a folder name holds 'char' or 'info'
    assert rescored["compat"] == "official"
    assert rescored["tasks"]["mvbench_tiny"]["metric"] == scorer_for("mvbench_tiny", "A", "official", video_path)
    assert rescored["tasks"]["mvbench_tiny"]["metric"] != "mcq"


def test_qa_utility_on_a_curated_set(tiny_models, tmp_path: Path) -> None:
    scenes = write_scenes(tmp_path / "images", 6)
    curate_import(tmp_path, scene_rows(scenes))
    cfg = EvalConfig.model_validate({
        "qa_utility": {"dataset": str(tmp_path / "cur" / "dataset" / "train.parquet"),
                       "qa": {"answerer": {"name": "lexical"}, "mode": "all_qa"}},
        "captioner": {"name": "transformers", "model": str(tiny_models["captioner"]),
                      "sampling": {"n": 2, "max_tokens": 8, "seed": 0}},
        "output_dir": str(tmp_path / "ev")})
    report = run(cfg)
    res = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    assert res["n_samples"] == 6 and res["metric"] == "qa_accuracy"
    # random tiny captions mention no shape: the lexical answerer can answer nothing
    assert res["m_acc"] == 0.0 and report.metrics["qa_utility M_Acc"] == 0.0
    assert res["cannot_answer_rate"] is None  # all_qa shows no cannot-answer option
    sampled = cfg.model_copy(update={"qa_utility": cfg.qa_utility.model_copy(update={
        "qa": cfg.qa_utility.qa.model_copy(update={"mode": "sample"})})})
    report = run(sampled, overwrite=True)
    res = json.loads((tmp_path / "ev" / "results_latest.json").read_text())["tasks"]["qa_utility"]
    # ... and with the option offered, it says so: the captions did not hold the answers
    assert res["cannot_answer_rate"] > 0.5
    assert report.metrics["qa_utility cannot-answer rate"] == res["cannot_answer_rate"]


def test_qa_utility_through_the_reward_service_scores_as_in_process(tmp_path: Path) -> None:
    """``qa_utility.qa.service``: the captions are scored by a real ``caprl serve-reward`` app on 127.0.0.1 over
    ``POST /v1/reward``, and the results are the in-process scorer's on the same captions (the lexical answerer is
    deterministic; both sides seeded alike). It used to end in ``KeyError: 'n_questions'`` once every caption was in:
    the service's details carried only the per-caption reward, not the per-question details the task reads."""
    from caprl_kit.rewards.server import RewardServerConfig
    from caprl_kit.rewards.server_app import create_app
    from uvicorn_thread import serve

    scenes = write_scenes(tmp_path / "images", 4)
    data = curate_import(tmp_path, scene_rows(scenes)) / "train.parquet"
    # per image: the complete caption and its first sentence only, so some questions go unanswered
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"image": str(tmp_path / "images" / f"{s.key}.png"), "caption": c}) + "\n"
                                for s in scenes for c in (s.caption(), s.caption().split(". ")[0] + ".")))

    def evaluate(qa: dict, out: str) -> tuple[dict, dict, list[dict]]:
        cfg = EvalConfig.model_validate({"qa_utility": {"dataset": str(data), "qa": qa}, "captions": {
            "path": str(captions)}, "answerer": {"name": "lexical"}, "output_dir": str(tmp_path / out)})
        report = run(cfg)
        res = json.loads((tmp_path / out / "results_latest.json").read_text())["tasks"]["qa_utility"]
        samples = [json.loads(x) for x in next((tmp_path / out).glob("samples_qa_utility_*.jsonl")).read_text()
                   .splitlines()]
        return report.metrics, res, sorted(samples, key=lambda r: (r["sample_id"], r["caption_index"]))

    for mode in ("all_qa", "shuffle"):
        qa = {"mode": mode, "qa_num": 4, "seed": 0, "answerer": {"name": "lexical"}}
        local = evaluate(qa, f"local-{mode}")
        with serve(create_app(RewardServerConfig.model_validate({"qa": qa}))) as url:
            remote = evaluate({"service": {"urls": [url]}}, f"service-{mode}")
        metrics, res, samples = local
        assert res["n_samples"] == 4 and len(samples) == 8 and 0.0 < res["m_acc"] < res["bon"] == 1.0, res
        assert remote[1]["n_samples"] == 4 and remote[1]["n_failed"] == 0
        for key in ("m_acc", "bon", "cannot_answer_rate"):
            assert remote[1][key] == res[key], (mode, key)
        assert [(s["score"], s["question"], s["response"]) for s in remote[2]] == [
            (s["score"], s["question"], s["response"]) for s in samples]
        assert remote[0]["qa_utility M_Acc"] == metrics["qa_utility M_Acc"]
        if mode == "shuffle":  # the cannot-answer option was offered, and taken for the questions a caption lacks
            assert 0.0 < res["cannot_answer_rate"] < 1.0


def test_two_model_report_in_headless_chromium(tiny_models, bench: Path, tmp_path: Path) -> None:
    from caprl_kit.models.tiny import build_tiny_models

    other = build_tiny_models(tmp_path / "other-models", seed=1)
    run(cfg_for(tiny_models, bench, tmp_path / "a", "tiny-seed0"))
    run(cfg_for(other, bench, tmp_path / "b", "tiny-seed1"))
    html_path = tmp_path / "compare.html"
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(html_path)])
    assert result.exit_code == 0, result.output
    text = html_path.read_text()
    assert text.count("<tr><td>tiny-seed0</td>") >= 2 and "tiny-seed1" in text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (bash dev.sh test installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", html_path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([chromium, *flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert '<table id="summary">' in dom and "tiny-seed1" in dom and '<svg id="chart"' in dom


def test_precomputed_caption_files_in_the_official_layouts_skip_stage_1(tiny_models, bench: Path,
                                                                         tmp_path: Path) -> None:
    """CapRL-2M style ({"image": path, "caption"}) and CapRL-Video-178K style ({"video": path, "caption"}) rows,
    relative to a media root: the answerer reads them as published; an item the file does not caption is a
    no_caption row; answers are reused for the same captions and a changed caption file is refused as a changed
    config (like a changed captioner), never answered from stale shards."""
    shapes = json.loads((bench / "json_file" / "lmm_eval_shapes.json").read_text())
    lines = [{"image": r["image"], "caption": f"A {color} shape."} for r, color in
             zip(shapes[:4], ["red", "green", "blue", "red"])]  # the fifth image has no caption
    lines += [{"video": f"videos/v{i}.mp4", "caption": "A bar moves from left to right."} for i in range(3)]
    lines.append({"video": "videos/v0.mp4", "caption": "Based on the provided video frames, a bar moves."})
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    base = cfg_for(tiny_models, bench, tmp_path / "ev", "file").model_dump()
    cfg = EvalConfig.model_validate({**base, "captions": {"path": str(captions), "media_root": str(bench)}})
    report = run(cfg)
    out = tmp_path / "ev"
    assert not (out / "captions").exists()  # no captioner ran
    res = json.loads((out / "results_latest.json").read_text())["tasks"]
    assert res["shapes"]["n_samples"] == 4 and res["shapes"]["failed"] == {"no_caption": 1}
    assert res["mvbench_tiny"]["n_samples"] == 3
    samples = [json.loads(x) for x in next(out.glob("samples_mvbench_tiny_*.jsonl")).read_text().splitlines()]
    assert sorted({s["caption"] for s in samples}) == sorted({x["caption"] for x in lines[4:]})
    assert res["mvbench_tiny"]["caption_monitors"]["boilerplate_opener"] == pytest.approx(1 / 4)
    assert report.n_failed == 1
    # the same run again: answers come from the cache; a changed caption file is answered anew
    answers = sorted((out / "answers" / "shapes").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in answers]
    run(cfg)
    assert [p.stat().st_mtime_ns for p in answers] == stamps
    assert answers, "stage 2 wrote its answer shards"
    lines[0]["caption"] = "A purple shape."
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    refused = runner.invoke(app, ["eval", "-c", str(_yaml(tmp_path, cfg)), "-o", str(out)])
    assert refused.exit_code == 2 and "config changed" in refused.output, refused.output  # never stale answers
    redone = runner.invoke(app, ["eval", "-c", str(_yaml(tmp_path, cfg)), "-o", str(out), "--overwrite"])
    assert redone.exit_code == 0, redone.output
    samples = [json.loads(x) for x in next(out.glob("samples_shapes_*.jsonl")).read_text().splitlines()]
    assert "A purple shape." in {s["caption"] for s in samples}


def _yaml(tmp_path: Path, cfg: EvalConfig) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(cfg.model_dump(mode="json", exclude={"output_dir"})))
    return path


class _EngineLog:
    """Counts the engines built and closed (wrapping the real transformers back end's __init__ and close)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from caprl_kit.backends.transformers_local import TransformersBackend

        self.built: list[object] = []
        self.closed: list[object] = []
        init, close = TransformersBackend.__init__, TransformersBackend.close

        def counted_init(backend, cfg):  # type: ignore[no-untyped-def]
            init(backend, cfg)
            self.built.append(backend)

        def counted_close(backend):  # type: ignore[no-untyped-def]
            self.closed.append(backend)
            close(backend)

        monkeypatch.setattr(TransformersBackend, "__init__", counted_init)
        monkeypatch.setattr(TransformersBackend, "close", counted_close)


def test_each_engine_is_built_once_per_command_and_closed_when_it_returns(tiny_models, bench: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engines = _EngineLog(monkeypatch)
    run(cfg_for(tiny_models, bench, tmp_path / "eval", "tiny-a"))  # two benchmarks: caption + answer each
    assert len(engines.built) == 2, "the captioner and the answerer, each built once for both benchmarks"
    assert {id(e) for e in engines.closed} == {id(e) for e in engines.built}, "every engine closed on return"
    assert len(engines.closed) == 2, "closed once each"


def test_every_engine_is_closed_when_the_command_fails(tiny_models, bench: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import caprl_kit.evaluate.pipeline as pipeline

    engines = _EngineLog(monkeypatch)

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("the results could not be written")

    monkeypatch.setattr(pipeline, "write_results", broken)
    with pytest.raises(RuntimeError, match="could not be written"):
        run(cfg_for(tiny_models, bench, tmp_path / "eval", "tiny-a"))
    assert engines.built and {id(e) for e in engines.closed} == {id(e) for e in engines.built}
