"""Benchmark file layouts (``benchmarks[].layout``): how ``caprl eval`` reads a benchmark file into samples, scores
one answer and reduces a task's rows to its result. ``caprl`` is eval's own (the official Prism image files and our
JSONL/Parquet rows, ``data.py``); the others are the VLMEvalKit files of the CapRL++ video evaluation
(``video_benchmarks.py``). Entries are lazy: naming a layout in a config imports nothing until it is used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from caprl_kit.registry import Registry

if TYPE_CHECKING:
    from caprl_kit.evaluate.config import BenchmarkConfig
    from caprl_kit.evaluate.data import Sample
    from caprl_kit.evaluate.judge import Judge
    from caprl_kit.evaluate.metrics import Compat

LAYOUTS = Registry("benchmark layout")


class BenchmarkLayout(Protocol):
    """What a layout provides to eval's stages (``pipeline.run_benchmark``)."""

    @property
    def media_type(self) -> str | None:
        """The media its rows point at (None: the benchmark's ``media_type`` key says)."""
        ...

    @property
    def judge(self) -> Judge | None:
        """The LLM judge of its open-ended questions (None: it has none)."""
        ...

    def load(self, bench: BenchmarkConfig) -> list[Sample]:
        """The file's samples; a bad row is one ``CaprlError`` naming the file and the row."""
        ...

    def scorer(self, bench: BenchmarkConfig, samples: list[Sample], compat: Compat) -> str:
        """The metric name its answer rows carry."""
        ...

    def score(self, response: str, sample: Sample, scorer: str, compat: Compat) -> tuple[str | None, float | None]:
        """(prediction, score) of one answer; a None score: the judge scores it."""
        ...

    def summarize(
        self, rows: list[dict[str, Any]], samples: list[Sample], scorer: str, compat: Compat
    ) -> dict[str, Any]:
        """The task's result (``schemas.evaluation.TaskResult`` fields), every answer scored again."""
        ...


class CaprlLayout:
    """Eval's own layout: the official Prism image files (``lmm_eval_*.json``) and our JSONL/JSON/Parquet rows; one
    scorer per benchmark (``scorer``, ``auto`` by its name or path), BoN and M_Acc."""

    media_type = None
    judge = None

    def load(self, bench: BenchmarkConfig) -> list[Sample]:
        from caprl_kit.evaluate.data import read_benchmark

        return read_benchmark(bench)

    def scorer(self, bench: BenchmarkConfig, samples: list[Sample], compat: Compat) -> str:
        from caprl_kit.evaluate.metrics import scorer_for

        gold = samples[0].gold if samples else ""
        return bench.scorer if bench.scorer != "auto" else scorer_for(bench.name, gold, compat, bench.path)

    def score(self, response: str, sample: Sample, scorer: str, compat: Compat) -> tuple[str | None, float | None]:
        from caprl_kit.evaluate.metrics import score

        return score(response, sample.gold, scorer, compat)

    def summarize(
        self, rows: list[dict[str, Any]], samples: list[Sample], scorer: str, compat: Compat
    ) -> dict[str, Any]:
        from caprl_kit.evaluate.answer_stage import summarize

        return summarize(rows, compat, scorer=scorer)


CAPRL_LAYOUT = CaprlLayout()
LAYOUTS.register("caprl", CAPRL_LAYOUT)
for _name, _attr in (
    ("videomme", "VIDEO_MME"),
    ("mvbench", "MVBENCH"),
    ("mmvu", "MMVU_LAYOUT"),
    ("mmbench_video", "MMBENCH_VIDEO"),
    ("tomato", "TOMATO"),
    ("timelens", "TIMELENS"),
):
    LAYOUTS.register(_name, target=f"caprl_kit.evaluate.video_benchmarks:{_attr}")
