"""The CapRL++ video evaluation end to end on tiny fixtures in VLMEvalKit's layouts (Video-MME, MVBench, MMVU,
MMBench-Video, TOMATO, TimeLens-Bench): each layout through eval on the tiny captioner and answerer; exact
per-benchmark breakdowns from known captions with the lexical answerer; TimeLens and the judged open-ended answers
through an OpenAI-compatible server on 127.0.0.1, judged in the run or later (``caprl eval judge RUN_DIR``); and the
stage-2-only rerun from a run's saved captions, counting the captioner's calls."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.errors import ConfigError
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.evaluate.pipeline import run
from chat_server import ChatServer
from vlmevalkit_files import VIDEOS, captions_file, write_all

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vlmevalkit")
    return root, write_all(root)


def benchmarks(files: dict, layouts: list[str]) -> list[dict]:
    return [{"name": layout, "path": str(files[layout][0]), "layout": layout} for layout in layouts]


def tiny(model: Path, tokens: int, n: int = 1) -> dict:
    return {"name": "transformers", "model": str(model),
            "sampling": {"n": n, "temperature": 1.0, "max_tokens": tokens, "seed": 0}}


def results(out: Path) -> dict:
    return json.loads((out / "results_latest.json").read_text())["tasks"]


def samples(out: Path, task: str) -> list[dict]:
    latest = sorted(out.glob(f"samples_{task}_*.jsonl"))[-1]  # the stamps sort in time order
    return [json.loads(x) for x in latest.read_text().splitlines()]


def test_each_layout_through_eval_on_the_tiny_engines(tiny_models, bench, tmp_path: Path) -> None:
    """Every layout's rows become samples whose videos are found where VLMEvalKit keeps them, captioned (n=2),
    answered and reduced to BoN/M_Acc and the benchmark's breakdown; open-ended answers without a judge wait for
    one and are counted."""
    root, files = bench
    out = tmp_path / "eval"
    layouts = list(VIDEOS)
    cfg = EvalConfig.model_validate({
        "benchmarks": benchmarks(files, layouts),
        "captioner": tiny(tiny_models["captioner"], 6, n=2), "answerer": tiny(tiny_models["answerer"], 6),
        "media": {"video_max_frames": 4}, "sharding": {"shard_size": 2}, "output_dir": str(out)})
    report = run(cfg)
    tasks = results(out)
    n_rows = {"videomme": 4, "mvbench": 2, "mmvu": 3, "mmbench_video": 2, "tomato": 2, "timelens": 2}
    for layout in layouts:
        manifest = [json.loads(x)["path"] for x in (out / "captions" / layout / "manifest.jsonl").read_text()
                    .splitlines()]
        assert manifest == [str(root / v) for v in VIDEOS[layout]], layout  # every video found where it lives
        t, rows = tasks[layout], samples(out, layout)
        assert t["n_samples"] + t["n_failed"] == n_rows[layout], (layout, t)
        assert len(rows) == 2 * n_rows[layout] and {r["caption_index"] for r in rows} == {0, 1}
    # the breakdowns, by the benchmark's own dimensions and groups (the open-ended ones wait for the judge)
    assert list(tasks["videomme"]["breakdown"]["duration"]) == ["short", "medium", "long"]
    assert tasks["videomme"]["breakdown"]["duration"]["long"]["n_samples"] == 2
    assert set(tasks["mvbench"]["breakdown"]["task_type"]) == {"Moving Direction", "Action Sequence"}
    assert set(tasks["tomato"]["breakdown"]) == {"task", "demonstration_type"}
    assert list(tasks["timelens"]["breakdown"]["subset"]) == ["charades"]
    assert set(tasks["timelens"]["metrics"]) == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"}
    assert tasks["timelens"]["metrics"]["mIoU"] == pytest.approx(tasks["timelens"]["m_acc"])
    assert tasks["mmbench_video"]["failed"] == {"awaiting_judge": 2} and tasks["mmbench_video"]["m_acc"] is None
    assert tasks["mmvu"]["failed"] == {"awaiting_judge": 2} and tasks["mmvu"]["n_samples"] == 1
    waiting = [r for r in samples(out, "mmvu") if r["status"] == "awaiting_judge"]
    assert len(waiting) == 4 and all("caprl eval judge" in r["error_message"] for r in waiting)
    assert any("caprl eval judge" in note and note.startswith("mmvu") for note in report.notes)
    # the question as the benchmark's prompt asks it, after the caption
    first = samples(out, "mvbench")[0]["question"]
    assert first.endswith("Options:\n(A) left\n(B) right\n(C) up\nOnly give the best option.")


def test_multiple_choice_layouts_score_as_their_benchmarks(bench, tmp_path: Path) -> None:
    """Known captions (a CapRL-Video-178K style file) and the lexical answerer: the letters it gives are read as each
    benchmark reads them, and each breakdown holds exactly the groups' accuracies."""
    root, files = bench
    layouts = ["videomme", "mvbench", "tomato", "mmvu"]
    out = tmp_path / "eval"
    cfg = EvalConfig.model_validate({
        "benchmarks": benchmarks(files, layouts),
        "captions": {"path": str(captions_file(root, files, tmp_path / "captions.jsonl")), "media_root": str(root)},
        "answerer": {"name": "lexical"}, "output_dir": str(out)})
    report = run(cfg)
    tasks = results(out)
    video_mme = tasks["videomme"]
    assert video_mme["m_acc"] == 0.75 and video_mme["metric"] == "videomme_letter"
    assert {g: r["m_acc"] for g, r in video_mme["breakdown"]["duration"].items()} == {
        "short": 1.0, "medium": 1.0, "long": 0.5}
    assert video_mme["metrics"] == {"short": 1.0, "medium": 1.0, "long": 0.5}
    assert video_mme["breakdown"]["task_type"]["Counting Problem"]["m_acc"] == 0.0
    assert report.metrics["videomme long"] == 0.5
    assert {g: r["m_acc"] for g, r in tasks["mvbench"]["breakdown"]["task_type"].items()} == {
        "Moving Direction": 1.0, "Action Sequence": 0.0}
    assert {g: r["m_acc"] for g, r in tasks["tomato"]["breakdown"]["task"].items()} == {"count": 0.0,
                                                                                      "direction": 1.0}
    # MMVU: the multiple-choice question is scored; its open-ended ones give the lexical answerer no options
    assert tasks["mmvu"]["breakdown"]["question_type"] == {
        "multiple-choice": {"n_samples": 1, "m_acc": 1.0, "bon": 1.0, "metrics": {}}}
    assert tasks["mmvu"]["failed"] == {"answer_failed": 2}
    predictions = {r["sample_id"]: r["prediction"] for r in samples(out, "videomme")}
    assert predictions == {"0": "A", "1": "B", "2": "C", "3": "B"}


def _replies(body: dict, n: int) -> list[str]:
    """The loopback server's answers: TimeLens spans, open-ended answers, and both judges' verdicts (the answer
    right when it says the gold)."""
    text = " ".join(p["text"] if isinstance(p, dict) else "" for m in body["messages"]
                    for p in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]))
    if "Ground Truth Answer:" in text:  # the MMVU judge
        gold = re.search(r"Ground Truth Answer: (.*?)\n", text).group(1)
        said = re.search(r"Model Response to the Question: (.*?)\n", text).group(1)
        return [json.dumps({"extracted_answer": said, "correct": said == gold})] * n
    if "Groundtruth answer:" in text:  # the MMBench-Video judge
        gold = re.search(r"Groundtruth answer: (.*?)\n", text).group(1)
        said = re.search(r"Candidate answer: (.*?)\n", text).group(1)
        return ["3" if said == gold else "1"] * n
    if "determining its starting and ending times" in text:
        return ["The event happens in 0.5 - 1.5 seconds."] * n
    known = {"Which organ is shown?": "The answer is A.", "What force pulls the ball down?": "gravity", "What shape does the ball have?": "square",
             "What is the man holding?": "A red umbrella.", "Why does the man smile?": "He is happy."}
    return [next(a for q, a in known.items() if q in text)] * n


def test_timelens_and_open_ended_answers_judged_later_or_in_the_run(bench, tmp_path: Path) -> None:
    """An OpenAI-compatible server on 127.0.0.1 answers and judges. judge.skip leaves the open-ended answers waiting
    (no judge request); ``caprl eval judge RUN_DIR`` judges them from the saved answers (no answerer request), the
    verdicts are stored and reused; a run with the judge on gives the same results."""
    root, files = bench
    layouts = ["mmvu", "mmbench_video", "timelens"]
    with ChatServer(choices=_replies) as server:
        openai = {"name": "openai", "model": "judge-or-answerer", "sampling": {"temperature": 0.0, "max_tokens": 32},
                  "openai": {"base_url": server.base_url, "max_retries": 0}}
        base = {
            "benchmarks": benchmarks(files, layouts),
            "captions": {"path": str(captions_file(root, files, tmp_path / "captions.jsonl")),
                         "media_root": str(root)},
            "answerer": {**openai, "openai": {**openai["openai"], "served_model": "answerer"}}}
        judge = {"backend": {**openai, "model": "gpt-4o"}, "skip": True}
        out = tmp_path / "later"
        run(EvalConfig.model_validate({**base, "judge": judge, "output_dir": str(out)}))
        assert not [b for b in server.bodies if b["model"] == "gpt-4o"], "judge.skip: no judge request"
        waiting = results(out)
        assert waiting["mmbench_video"]["failed"] == {"awaiting_judge": 2}
        timelens = waiting["timelens"]  # IoU of [0.5, 1.5] with [0.5, 1.5] and with [1.0, 2.0]
        assert timelens["m_acc"] == pytest.approx((1 + 1 / 3) / 2)
        assert timelens["metrics"] == pytest.approx({"R1@0.3": 1.0, "R1@0.5": 0.5, "R1@0.7": 0.5, "mIoU": 2 / 3})
        answered = len(server.bodies)

        judged = runner.invoke(app, ["eval", "judge", str(out), f"judge.backend.openai.base_url={server.base_url}"])
        assert judged.exit_code == 0, judged.output
        judge_bodies = server.bodies[answered:]
        assert len(judge_bodies) == 2 + 2 and {b["model"] for b in judge_bodies} == {"gpt-4o"}
        rating = next(b for b in judge_bodies if b["messages"][0]["role"] == "system")
        assert rating["messages"][0]["content"].strip().startswith("As an AI assistant, your task is to evaluate")
        assert rating["messages"][-1]["content"].startswith("Question: ") and rating["temperature"] == 0.0
        tasks = results(out)
        assert tasks["mmbench_video"]["m_acc"] == pytest.approx((3 / 3 + 1 / 3) / 2)
        assert tasks["mmbench_video"]["metrics"]["mean_rating"] == pytest.approx(2.0)
        assert tasks["mmbench_video"]["breakdown"]["L3"]["Object Recognition"]["metrics"] == {"mean_rating": 3.0}
        assert tasks["mmvu"]["breakdown"]["question_type"]["open-ended"]["m_acc"] == 0.5  # gravity yes, square no
        assert tasks["mmvu"]["m_acc"] == pytest.approx(2 / 3) and tasks["mmvu"]["failed"] == {}
        assert tasks["timelens"] == {**timelens, "caption_monitors": tasks["timelens"]["caption_monitors"]}
        rows = {r["sample_id"]: r for r in samples(out, "mmvu")}
        assert rows["mmvu_1"]["metric"] == "judge_correct" and rows["mmvu_1"]["prediction"] == "gravity"
        # judging again: every verdict is stored, no request
        before = len(server.bodies)
        again = runner.invoke(app, ["eval", "judge", str(out), f"judge.backend.openai.base_url={server.base_url}"])
        assert again.exit_code == 0, again.output
        assert len(server.bodies) == before and results(out)["mmvu"]["m_acc"] == tasks["mmvu"]["m_acc"]

        inline = tmp_path / "inline"
        run(EvalConfig.model_validate({**base, "judge": {**judge, "skip": False}, "output_dir": str(inline)}))
        for task in layouts:
            assert results(inline)[task]["m_acc"] == pytest.approx(tasks[task]["m_acc"]), task


def test_judge_command_needs_a_run_and_a_judge(bench, tmp_path: Path) -> None:
    root, files = bench
    out = tmp_path / "eval"
    run(EvalConfig.model_validate({
        "benchmarks": benchmarks(files, ["tomato"]), "answerer": {"name": "lexical"}, "output_dir": str(out),
        "captions": {"path": str(captions_file(root, files, tmp_path / "captions.jsonl")), "media_root": str(root)}}))
    def judge(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["eval", "judge", *args])
        return result.exit_code, " ".join(result.output.split())  # the console wraps long lines

    code, said = judge(str(out))
    assert code == 2 and "sets no judge" in said, said
    code, said = judge(str(out), "judge.backend.model=gpt-4o")
    assert code == 2 and "judge: no benchmark has open-ended questions" in said, said
    code, said = judge(str(tmp_path))
    assert code == 2 and f"{tmp_path} is not a caprl eval run" in said, said
    # answers the run has not finished are not judged (the run resumes them first)
    mmvu = tmp_path / "mmvu"
    run(EvalConfig.model_validate({
        "benchmarks": benchmarks(files, ["mmvu"]), "answerer": {"name": "lexical"}, "output_dir": str(mmvu),
        "captions": {"path": str(tmp_path / "captions.jsonl"), "media_root": str(root)}}))
    (mmvu / "answers" / "mmvu" / "00000_stats.json").unlink()
    code, said = judge(str(mmvu), "judge.backend.model=gpt-4o")
    assert code == 2 and "holds no finished answers of mmvu" in said, said


def test_stage_2_alone_from_a_runs_saved_captions(tiny_models, bench, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``captions_from``: a new answerer answers the first run's captions; the captioner is asked nothing."""
    from caprl_kit.backends.transformers_local import TransformersBackend

    calls: dict[str, int] = {}
    generate = TransformersBackend.generate

    def counted(backend, requests):  # type: ignore[no-untyped-def]
        calls[backend.cfg.model] = calls.get(backend.cfg.model, 0) + len(requests)
        return generate(backend, requests)

    monkeypatch.setattr(TransformersBackend, "generate", counted)
    _, files = bench
    first, second = tmp_path / "first", tmp_path / "second"
    common = {"benchmarks": benchmarks(files, ["videomme", "tomato"]), "media": {"video_max_frames": 4},
              "captioner": tiny(tiny_models["captioner"], 6, n=2)}
    run(EvalConfig.model_validate({**common, "answerer": {"name": "lexical"}, "output_dir": str(first)}))
    captioner = str(tiny_models["captioner"])
    assert calls[captioner] == 5  # the five videos
    calls.clear()
    again = EvalConfig.model_validate({**common, "answerer": tiny(tiny_models["answerer"], 4),
                                       "captions_from": str(first), "output_dir": str(second)})
    report = run(again)
    assert calls.get(captioner, 0) == 0, "stage 1 came from the first run"
    assert calls[str(tiny_models["answerer"])] == 2 * (4 + 2)  # every caption of every question, answered anew
    assert not (second / "captions").exists()
    for task in ("videomme", "tomato"):
        old = {(r["sample_id"], r["caption_index"]): r["caption"] for r in samples(first, task)}
        new = {(r["sample_id"], r["caption_index"]): r["caption"] for r in samples(second, task)}
        assert new == old and report.metrics[f"{task} M_Acc"] is not None
    # the output must be another folder, and the earlier run must hold every task's captions
    with pytest.raises(Exception, match="is the output folder"):
        EvalConfig.model_validate({**common, "captions_from": str(first), "output_dir": str(first)})
    missing = EvalConfig.model_validate({**common, "benchmarks": benchmarks(files, ["mvbench"]),
                                         "captions_from": str(first), "output_dir": str(tmp_path / "third")})
    with pytest.raises(ConfigError, match="holds no captions of mvbench"):
        run(missing)
    assert not (tmp_path / "third").exists()
