"""The curation stage workers. Each stage is sharded like the input (shard i of every stage covers input shard i),
reads the previous stage's shard i from disk, and writes its own shard + stats sidecar — so each stage resumes
and restarts on its own.

generate: media -> generator LVLM -> raw MCQ text (import modes: the input's QA text / lists instead)
parse:    raw text -> canonical MCQs through the strict validator (unusable blocks / imported questions dropped
          with their reasons, never failing the job)
answer:   each question x rotations, shuffled: with the media (+ "None of the above") and text-only -> trials,
          accuracies and the filter decision
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams, check_engine_up
from caprl_kit.commands import NullProgress, Progress
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.filter import decide
from caprl_kit.curate.prompts import ANSWER_TEMPLATE, CAPTION_EVIDENCE_TEMPLATE, GENERATION_PROMPT
from caprl_kit.errors import InvalidMCQ, MediaError
from caprl_kit.io.batching import Loaded, cut_batches
from caprl_kit.io.decode import decode_map
from caprl_kit.io.fs import join
from caprl_kit.io.layout import CURATE_STAGE_DIR
from caprl_kit.io.media import VideoClip, load_media
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.readers import InputItem
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.mcq import NONE_OF_THE_ABOVE, extract_letter, parse_generation, shuffle_options
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.schemas.curate import MCQ, MCQGenerationRow, MCQSetRow, QATrialsRow
from caprl_kit.schemas.run import ShardStats

STAGES = ("generate", "parse", "answer")


def stage_dir(cfg: CurateConfig, stage: str) -> RunDir:
    artifact = {"generate": MCQGenerationRow, "parse": MCQSetRow, "answer": QATrialsRow}[stage]
    return RunDir(join(str(cfg.output_dir), CURATE_STAGE_DIR.format(stage=stage)), artifact)


def _load_all(cfg: CurateConfig, items: list[InputItem]) -> list[Loaded]:
    def one(item: InputItem) -> Loaded:
        try:
            media, _ = load_media(item.source, item.data, item.media_type, cfg.media)
        except MediaError as exc:
            return Loaded(item, error=exc)
        return Loaded(item, media=media)

    return list(decode_map(one, items, workers=2))  # the first Ctrl-C cancels pending decodes


def _media_request(ld: Loaded, text: str, system: str | None, sampling: SamplingParams) -> Request:
    if isinstance(ld.media, VideoClip):
        return Request.user(text, videos=[ld.media], system=system, sampling=sampling)
    return Request.user(text, images=[ld.media.image], system=system, sampling=sampling)  # type: ignore[union-attr]


class GenerateWorker:
    def __init__(self, cfg: CurateConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.run = stage_dir(cfg, "generate")
        self.backend = build_backend(cfg.generate.backend) if cfg.import_mode == "none" else None
        self.engine_calls = 0

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        cfg = self.cfg
        stats = StatsBuilder(spec.shard_id, MCQGenerationRow.schema_id())
        loaded = _load_all(cfg, items)
        rows: list[dict[str, Any] | None] = [None] * len(items)
        model = (cfg.generate.backend.model or cfg.generate.backend.name) if self.backend else f"import:{cfg.import_mode}"
        base = {"model": model}
        todo = []
        for i, ld in enumerate(loaded):
            it = ld.item
            common = {"key": it.key, "source": it.source, "media_type": it.media_type, **base}
            if ld.error is not None:
                rows[i] = {**common, "status": ld.error.kind, "error_message": str(ld.error)}
            elif self.backend is None:
                value = it.extra.get(cfg.import_column)
                if value is None:
                    rows[i] = {**common, "status": "no_import_data",
                               "error_message": f"input column '{cfg.import_column}' is empty"}
                else:
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                    rows[i] = {**common, "raw_text": text, "status": "ok"}
            else:
                todo.append(i)
        sampling = SamplingParams.from_config(cfg.generate.backend.sampling).with_(seed=cfg.seed)
        system = cfg.generate.system_prompt or GENERATION_PROMPT
        responses = []
        for batch in cut_batches([loaded[i] for i in todo], cfg.generate.backend.batch_size, 1 << 30):
            idx = [todo[j] for j in batch]
            reqs = [_media_request(loaded[i], cfg.generate.user_text, system, sampling) for i in idx]
            self.engine_calls += 1
            batch_out = self.backend.generate(reqs)  # type: ignore[union-attr]
            responses += batch_out
            for i, resp in zip(idx, batch_out):
                it = loaded[i].item
                common = {"key": it.key, "source": it.source, "media_type": it.media_type, **base}
                if resp.ok:
                    rows[i] = {**common, "raw_text": resp.texts[0], "completion_tokens": resp.completion_tokens[0],
                               "finish_reason": resp.finish_reasons[0], "status": "ok"}
                else:
                    rows[i] = {**common, "status": resp.error_kind or "generation_failed", "error_message": resp.error}
            self.progress.advance("generate", items=len(idx))
        self.progress.advance("generate", items=len(items) - len(todo), failed=sum(1 for ld in loaded if ld.error))
        check_engine_up(responses, f"generate with {cfg.generate.backend.name}:{cfg.generate.backend.model}")
        for r in rows:
            stats.add(r["status"], r.get("error_message"))  # type: ignore[index]
        stats.add_metric("engine_calls", self.engine_calls)
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)  # type: ignore[arg-type]
        self.engine_calls = 0
        return built


class ParseWorker:
    def __init__(self, cfg: CurateConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.src = stage_dir(cfg, "generate")
        self.run = stage_dir(cfg, "parse")

    def parse_one(self, row: dict[str, Any]) -> dict[str, Any]:
        """One generate row -> its MCQ set. A question that cannot be used is dropped with its reason (naming the key
        and the question index) in ``rejected``; only a row whose import data is not a list fails as a whole."""
        key = row["key"]
        base = {"key": key, "source": row["source"], "media_type": row["media_type"]}
        if row["status"] != "ok":
            return {**base, "questions": [], "n_blocks": 0, "n_dropped": 0, "status": row["status"],
                    "error_message": row["error_message"]}
        questions: list[dict[str, Any]] = []
        dropped: list[tuple[int, str, str]] = []  # (question index, kind, reason)
        if self.cfg.import_mode == "qa":
            try:
                data = json.loads(row["raw_text"])
            except ValueError as exc:
                data, error = None, f"import QA list is not valid JSON: {exc}"
            else:
                error = None if isinstance(data, list) else f"import QA list is a {type(data).__name__}, not a list"
            if error is not None:
                return {**base, "questions": [], "n_blocks": 0, "n_dropped": 0, "status": "unparseable",
                        "error_message": error}
            for qi, q in enumerate(data):
                try:
                    questions.append(validate_mcq(q).model_dump())
                except InvalidMCQ as exc:
                    dropped.append((qi, exc.kind, exc.reason))
            n_blocks, empty = len(data), "empty QA list"
        else:
            result = parse_generation(row["raw_text"] or "", self.cfg.generate.max_questions)
            questions = [q.model_dump() for q in result.questions]
            dropped = [(r.index, r.kind, r.reason) for r in result.rejected]
            n_blocks, empty = result.n_blocks, "no question blocks found"
        rejected = [{"index": i, "kind": kind, "reason": f"{key} question {i}: {reason}"} for i, kind, reason in dropped]
        reasons = sorted({reason for _, _, reason in dropped})
        return {**base, "questions": questions, "n_blocks": n_blocks, "n_dropped": len(rejected), "rejected": rejected,
                "status": "ok" if questions else "no_questions",
                "error_message": None if questions else ("; ".join(reasons) if reasons else empty)}

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        stats = StatsBuilder(spec.shard_id, MCQSetRow.schema_id())
        rows = [self.parse_one(r) for r in read_shard(self.src.shard_url(spec.shard_id), MCQGenerationRow).to_pylist()]
        for r in rows:
            stats.add(r["status"], r["error_message"])
            stats.add_metric("questions", len(r["questions"]))
            stats.add_metric("rejected_blocks", r["n_dropped"])
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        self.progress.advance("parse", items=len(rows))
        return built


class AnswerWorker:
    def __init__(self, cfg: CurateConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.src = stage_dir(cfg, "parse")
        self.run = stage_dir(cfg, "answer")
        self.backend = build_backend(cfg.answer.backend)
        self.sampling = SamplingParams.from_config(cfg.answer.backend.sampling).with_(seed=cfg.seed)
        self.engine_calls = 0

    def _correct(self, text: str, answer: str, choices: list[str]) -> tuple[str | None, bool]:
        if self.cfg.answer.compat == "official":  # spec §1.4: a plain substring test
            return extract_letter(text, choices), answer in text
        letter = extract_letter(text, choices)
        return letter, letter == answer

    def _generate(self, requests: list[Request]) -> list[Any]:
        out = []
        size = self.cfg.answer.backend.batch_size
        for start in range(0, len(requests), size):
            self.engine_calls += 1
            out += self.backend.generate(requests[start : start + size])
        return out

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        cfg = self.cfg
        stats = StatsBuilder(spec.shard_id, QATrialsRow.schema_id())
        by_key = {it.key: it for it in items}
        sets = [r for r in read_shard(self.src.shard_url(spec.shard_id), MCQSetRow).to_pylist() if r["questions"]]
        media: dict[str, Loaded] = {}
        if cfg.answer.evidence == "media":
            for ld in _load_all(cfg, [by_key[s["key"]] for s in sets]):
                media[ld.item.key] = ld
        plan = []  # (key, qa_index, mcq, visual shuffles, text shuffles)
        visual_reqs: list[Request] = []
        text_reqs: list[Request] = []
        for s in sets:
            key = s["key"]
            ld = media.get(key)
            for qi, q in enumerate(s["questions"]):
                mcq = MCQ.model_validate(q)
                rng = random.Random(f"{cfg.seed}:{key}:{qi}")  # independent of sharding: resumes are identical
                vis = [shuffle_options(mcq, rng, extra_option=NONE_OF_THE_ABOVE) for _ in range(cfg.answer.rotations)]
                txt = [shuffle_options(mcq, rng, extra_option=None) for _ in range(cfg.answer.rotations)]
                if ld is not None and ld.error is not None:
                    plan.append((key, qi, mcq, None, None, str(ld.error)))
                    continue
                plan.append((key, qi, mcq, vis, txt, None))
                for v in vis:
                    if cfg.answer.evidence == "caption":
                        caption = by_key[key].extra.get(cfg.answer.caption_column) or ""
                        text = CAPTION_EVIDENCE_TEMPLATE.format(caption=caption, question=v.question_full)
                        visual_reqs.append(Request.user(text, sampling=self.sampling))
                    else:
                        visual_reqs.append(_media_request(ld, ANSWER_TEMPLATE.format(question=v.question_full), None,
                                                          self.sampling))
                for t in txt:
                    text_reqs.append(Request.user(ANSWER_TEMPLATE.format(question=t.question_full), sampling=self.sampling))
        t0 = time.perf_counter()
        vis_all, txt_all = self._generate(visual_reqs), self._generate(text_reqs)
        check_engine_up(vis_all + txt_all, f"answer with {cfg.answer.backend.name}:{cfg.answer.backend.model}")
        vis_out, txt_out = iter(vis_all), iter(txt_all)
        rows = []
        for key, qi, mcq, vis, txt, error in plan:
            if error is not None:
                rows.append({"key": key, "qa_index": qi, "mcq": mcq.model_dump(), "visual_trials": [],
                             "text_trials": [], "visual_acc": 0.0, "text_acc": 0.0, "keep": False,
                             "reason": "media_error"})
                stats.add("media_error", error)
                continue
            trials = {}
            failure = None
            for name, shuffles, outs in (("visual_trials", vis, vis_out), ("text_trials", txt, txt_out)):
                trials[name] = []
                for r, s in enumerate(shuffles):
                    resp = next(outs)
                    if not resp.ok:  # the question cannot be judged: dropped under its own reason, never a dead shard
                        failure = failure or f"{resp.error_kind}: {resp.error}"
                        continue
                    letter, correct = self._correct(resp.texts[0], s.answer, s.choices)
                    trials[name].append({"rotation": r, "choices": s.choices, "answer": s.answer,
                                         "response": resp.texts[0], "predicted": letter, "correct": correct})
            if failure is not None:
                rows.append({"key": key, "qa_index": qi, "mcq": mcq.model_dump(), **trials, "visual_acc": 0.0,
                             "text_acc": 0.0, "keep": False, "reason": "answer_failed"})
                stats.add("answer_failed", failure)
                continue
            v_acc = sum(t["correct"] for t in trials["visual_trials"]) / len(vis)
            t_acc = sum(t["correct"] for t in trials["text_trials"]) / len(txt)
            keep, reason = decide(v_acc, t_acc, cfg.filter)
            rows.append({"key": key, "qa_index": qi, "mcq": mcq.model_dump(), **trials, "visual_acc": v_acc,
                         "text_acc": t_acc, "keep": keep, "reason": reason})
            stats.add("ok")
        stats.add_metric("engine_calls", self.engine_calls)
        stats.add_metric("answer_prompts", len(visual_reqs) + len(text_reqs))
        stats.add_metric("answer_s", time.perf_counter() - t0)
        self.engine_calls = 0
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        self.progress.advance("answer", items=len(items))
        return built


WORKERS = {"generate": GenerateWorker, "parse": ParseWorker, "answer": AnswerWorker}


def make_worker(cfg: CurateConfig, stage: str, progress: Progress) -> Any:
    return WORKERS[stage](cfg, progress)
