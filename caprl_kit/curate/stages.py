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

import functools
import json
import random
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Backend, Request, Response, SamplingParams
from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.filter import decide
from caprl_kit.curate.prompts import ANSWER_TEMPLATE, CAPTION_EVIDENCE_TEMPLATE, GENERATION_PROMPT
from caprl_kit.errors import InvalidMCQ, MediaError
from caprl_kit.io.batching import Loaded
from caprl_kit.io.config import MediaConfig
from caprl_kit.io.decode import decode_map
from caprl_kit.io.fs import join
from caprl_kit.io.locators import Locator, item_payload
from caprl_kit.io.media import ImageWire, VideoClip, load_media, url_limits
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.readers import InputItem
from caprl_kit.io.rows import column_value
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.mcq import NONE_OF_THE_ABOVE, extract_letter, parse_generation, shuffle_options
from caprl_kit.mcq.validate import validate_mcq
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.runners.stream import ShardStream, Work
from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.curate import MCQ, MCQGenerationRow, MCQSetRow, QATrialsRow
from caprl_kit.schemas.layout import CURATE_STAGE_DIR
from caprl_kit.schemas.run import ShardStats

STAGES = ("generate", "parse", "answer")


def stage_dir(cfg: CurateConfig, stage: str) -> RunDir:
    artifacts: dict[str, type[Artifact]] = {"generate": MCQGenerationRow, "parse": MCQSetRow, "answer": QATrialsRow}
    artifact = artifacts[stage]
    return RunDir(join(str(cfg.output_dir), CURATE_STAGE_DIR.format(stage=stage)), artifact)


def _load_one(item: InputItem, media_cfg: MediaConfig, wire: ImageWire | None) -> Loaded:
    """Module-level (not a closure) so decode processes can run it (``decode.processes``); an image in the
    generator back end's wire form when it has one."""
    try:
        payload = item_payload(item, media_cfg.max_file_bytes, url_limits(media_cfg))
        media, _ = load_media(item.source, payload, item.media_type, media_cfg, wire)
    except MediaError as exc:
        return Loaded(item, error=exc)
    return Loaded(item, media=media)


def _loader(cfg: CurateConfig, wire: ImageWire | None = None) -> Callable[[InputItem], Loaded]:
    return functools.partial(_load_one, media_cfg=cfg.media, wire=wire)


def _decoded(cfg: CurateConfig, items: list[InputItem], backend: Backend | None) -> Generator[Loaded, None, None]:
    """Decoded media (in ``backend``'s wire form) a bounded window ahead of the engine; the first Ctrl-C cancels
    pending decodes."""
    d = cfg.decode
    load = _loader(cfg, backend.image_wire if backend else None)
    return decode_map(load, items, d.workers, ahead=d.ahead or 64, processes=d.processes)


def generated_shards(cfg: CurateConfig) -> Iterator[tuple[ShardSpec, list[InputItem]]]:
    """The input as the generate stage recorded it, shard by shard: the later stages and the export read their
    items here, so the input is listed once per run (plus the fingerprint pass)."""
    run = stage_dir(cfg, "generate")
    start = 0
    for sid in sorted(run.done_shards()):
        rows = read_shard(run.shard_url(sid), MCQGenerationRow).to_pylist()
        items = [
            InputItem(
                key=r["key"],
                source=r["source"],
                data=r.get("media_bytes"),
                media_type=r["media_type"],
                extra=json.loads(r["carry"]) if r.get("carry") else {},
                locator=Locator(**r["media_locator"]) if r.get("media_locator") else None,
            )
            for r in rows
        ]
        yield ShardSpec(sid, start, start + len(items)), items
        start += len(items)


def _media_request(ld: Loaded, text: str, system: str | None, sampling: SamplingParams) -> Request:
    if isinstance(ld.media, VideoClip):
        return Request.user(text, videos=[ld.media], system=system, sampling=sampling)
    return Request.user(text, images=[ld.media.payload], system=system, sampling=sampling)  # type: ignore[union-attr]  # an image item: its media is a LoadedImage


class GenerateWorker:
    """generate on the streaming engine (runners/stream.py): one request per item; import modes need none."""

    def __init__(self, cfg: CurateConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.run = stage_dir(cfg, "generate")
        self.backend = build_backend(cfg.generate.backend) if cfg.import_mode == "none" else None
        self.model = (
            (cfg.generate.backend.model or cfg.generate.backend.name) if self.backend else f"import:{cfg.import_mode}"
        )
        self.engine_label = f"generate with {cfg.generate.backend.name}:{cfg.generate.backend.model}"

    def _common(self, it: InputItem) -> dict[str, Any]:
        return {
            "key": it.key,
            "source": it.source,
            "media_type": it.media_type,
            "model": self.model,
            "media_bytes": it.data if not it.source else None,
            "media_locator": asdict(it.locator) if it.locator else None,
            "carry": json.dumps(it.extra, default=str) if it.extra else None,
        }

    def _imported(self, it: InputItem) -> dict[str, Any]:
        value = column_value(it.extra, self.cfg.import_column)
        if value is None:
            return {
                **self._common(it),
                "status": "no_import_data",
                "error_message": f"input column '{self.cfg.import_column}' is empty",
            }
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return {**self._common(it), "raw_text": text, "status": "ok"}

    def _generated(self, it: InputItem, resp: Response) -> dict[str, Any]:
        self.progress.advance("generate", items=1, failed=int(not resp.ok), tokens=sum(resp.completion_tokens))
        if resp.ok:
            return {
                **self._common(it),
                "raw_text": resp.texts[0],
                "completion_tokens": resp.completion_tokens[0],
                "finish_reason": resp.finish_reasons[0],
                "status": "ok",
            }
        return {**self._common(it), "status": resp.error_kind or "generation_failed", "error_message": resp.error}

    # a Work's rows from its responses, arguments bound with functools.partial as each item is planned
    def _media_failed_rows(self, it: InputItem, error: MediaError, _got: list[Response]) -> list[dict[str, Any]]:
        return [{**self._common(it), "status": error.kind, "error_message": str(error)}]

    def _imported_rows(self, it: InputItem, _got: list[Response]) -> list[dict[str, Any]]:
        return [self._imported(it)]

    def _generated_rows(self, it: InputItem, got: list[Response]) -> list[dict[str, Any]]:
        return [self._generated(it, got[0])]

    def plan(self, spec: ShardSpec, items: list[InputItem]) -> Iterator[Work]:
        cfg = self.cfg
        sampling = SamplingParams.from_config(cfg.generate.backend.sampling).with_(seed=cfg.seed)
        system = cfg.generate.system_prompt or GENERATION_PROMPT
        loaded = _decoded(cfg, items, self.backend)
        try:
            for ld in loaded:
                if ld.error is not None:
                    self.progress.advance("generate", items=1, failed=1)
                    yield Work([], functools.partial(self._media_failed_rows, ld.item, ld.error))
                    continue
                if self.backend is None:  # import mode: the media is checked, the questions come from the input
                    self.progress.advance("generate", items=1)
                    yield Work([], functools.partial(self._imported_rows, ld.item))
                    continue
                yield Work(
                    [_media_request(ld, cfg.generate.user_text, system, sampling)],
                    functools.partial(self._generated_rows, ld.item),
                )
        finally:
            loaded.close()

    def commit(
        self,
        spec: ShardSpec,
        items: list[InputItem],
        rows: list[dict[str, Any]],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> ShardStats:
        stats = StatsBuilder(spec.shard_id, MCQGenerationRow.schema_id(), opened=opened)
        for r in rows:
            stats.add(r["status"], r.get("error_message"))
        stats.add_metric("requests", len(responses))
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        return built

    def open_stream(self) -> ShardStream:
        return ShardStream(self, self.backend)

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        return next(iter(self.open_stream().run([(spec, items)])))


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
            return {
                **base,
                "questions": [],
                "n_blocks": 0,
                "n_dropped": 0,
                "status": row["status"],
                "error_message": row["error_message"],
            }
        questions: list[dict[str, Any]] = []
        dropped: list[tuple[int, str, str]] = []  # (question index, kind, reason)
        if self.cfg.import_mode == "qa":
            error: str | None
            try:
                data = json.loads(row["raw_text"])
            except ValueError as exc:
                data, error = None, f"import QA list is not valid JSON: {exc}"
            else:
                error = None if isinstance(data, list) else f"import QA list is a {type(data).__name__}, not a list"
            if error is not None:
                return {
                    **base,
                    "questions": [],
                    "n_blocks": 0,
                    "n_dropped": 0,
                    "status": "unparseable",
                    "error_message": error,
                }
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
        rejected = [
            {"index": i, "kind": kind, "reason": f"{key} question {i}: {reason}"} for i, kind, reason in dropped
        ]
        reasons = sorted({reason for _, _, reason in dropped})
        return {
            **base,
            "questions": questions,
            "n_blocks": n_blocks,
            "n_dropped": len(rejected),
            "rejected": rejected,
            "status": "ok" if questions else "no_questions",
            "error_message": None if questions else ("; ".join(reasons) if reasons else empty),
        }

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
    """answer on the streaming engine: one unit of work per question (its rotations with the evidence and without);
    a question whose answers failed is dropped under ``answer_failed``, never a dead shard."""

    def __init__(self, cfg: CurateConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.src = stage_dir(cfg, "parse")
        self.run = stage_dir(cfg, "answer")
        self.backend = build_backend(cfg.answer.backend)
        self.sampling = SamplingParams.from_config(cfg.answer.backend.sampling).with_(seed=cfg.seed)
        self.engine_label = f"answer with {cfg.answer.backend.name}:{cfg.answer.backend.model}"

    def _correct(self, text: str, answer: str, choices: list[str]) -> tuple[str | None, bool]:
        if self.cfg.answer.compat == "official":  # spec §1.4: a plain substring test
            return extract_letter(text, choices), answer in text
        letter = extract_letter(text, choices)
        return letter, letter == answer

    def _requests(self, ld: Loaded | None, item: InputItem, vis: list[Any], txt: list[Any]) -> list[Request]:
        out = []
        for v in vis:
            if self.cfg.answer.evidence == "caption":
                caption = item.extra.get(self.cfg.answer.caption_column) or ""
                out.append(
                    Request.user(
                        CAPTION_EVIDENCE_TEMPLATE.format(caption=caption, question=v.question_full),
                        sampling=self.sampling,
                    )
                )
            else:
                out.append(
                    _media_request(
                        ld,  # type: ignore[arg-type]  # media evidence: the item was decoded for it
                        ANSWER_TEMPLATE.format(question=v.question_full),
                        None,
                        self.sampling,
                    )
                )
        return out + [
            Request.user(ANSWER_TEMPLATE.format(question=t.question_full), sampling=self.sampling) for t in txt
        ]

    def _trial_row(
        self, key: str, qi: int, mcq: MCQ, vis: list[Any], txt: list[Any], got: list[Response]
    ) -> dict[str, Any]:
        trials: dict[str, list[dict[str, Any]]] = {"visual_trials": [], "text_trials": []}
        failure = next((f"{r.error_kind}: {r.error}" for r in got if not r.ok), None)
        for name, shuffles, outs in (("visual_trials", vis, got[: len(vis)]), ("text_trials", txt, got[len(vis) :])):
            for r, (sh, resp) in enumerate(zip(shuffles, outs)):
                if not resp.ok:
                    continue
                letter, correct = self._correct(resp.texts[0], sh.answer, sh.choices)
                trials[name].append(
                    {
                        "rotation": r,
                        "choices": sh.choices,
                        "answer": sh.answer,
                        "response": resp.texts[0],
                        "predicted": letter,
                        "correct": correct,
                    }
                )
        if failure is not None:  # the question cannot be judged: dropped under its own reason
            return {
                "key": key,
                "qa_index": qi,
                "mcq": mcq.model_dump(),
                **trials,
                "visual_acc": 0.0,
                "text_acc": 0.0,
                "keep": False,
                "reason": "answer_failed",
                "error_message": failure,
            }
        v_acc = sum(t["correct"] for t in trials["visual_trials"]) / len(vis)
        t_acc = sum(t["correct"] for t in trials["text_trials"]) / len(txt)
        keep, reason = decide(v_acc, t_acc, self.cfg.filter)
        return {
            "key": key,
            "qa_index": qi,
            "mcq": mcq.model_dump(),
            **trials,
            "visual_acc": v_acc,
            "text_acc": t_acc,
            "keep": keep,
            "reason": reason,
        }

    def _trial_rows(
        self, key: str, qi: int, mcq: MCQ, vis: list[Any], txt: list[Any], got: list[Response]
    ) -> list[dict[str, Any]]:
        return [self._trial_row(key, qi, mcq, vis, txt, got)]

    @staticmethod
    def _media_error_rows(key: str, qi: int, mcq: MCQ, err: str, _got: list[Response]) -> list[dict[str, Any]]:
        return [
            {
                "key": key,
                "qa_index": qi,
                "mcq": mcq.model_dump(),
                "visual_trials": [],
                "text_trials": [],
                "visual_acc": 0.0,
                "text_acc": 0.0,
                "keep": False,
                "reason": "media_error",
                "error_message": err,
            }
        ]

    def plan(self, spec: ShardSpec, items: list[InputItem]) -> Iterator[Work]:
        cfg = self.cfg
        by_key = {it.key: it for it in items}
        sets = [r for r in read_shard(self.src.shard_url(spec.shard_id), MCQSetRow).to_pylist() if r["questions"]]
        wanted = [by_key[s["key"]] for s in sets]
        loaded = _decoded(cfg, wanted, self.backend) if cfg.answer.evidence == "media" else iter([None] * len(wanted))
        try:
            for s, ld in zip(sets, loaded):
                key = s["key"]
                for qi, q in enumerate(s["questions"]):
                    mcq = MCQ.model_validate(q)
                    rng = random.Random(f"{cfg.seed}:{key}:{qi}")  # independent of sharding: resumes are identical
                    vis = [
                        shuffle_options(mcq, rng, extra_option=NONE_OF_THE_ABOVE) for _ in range(cfg.answer.rotations)
                    ]
                    txt = [shuffle_options(mcq, rng, extra_option=None) for _ in range(cfg.answer.rotations)]
                    if ld is not None and ld.error is not None:
                        yield Work([], functools.partial(self._media_error_rows, key, qi, mcq, str(ld.error)))
                        continue
                    yield Work(
                        self._requests(ld, by_key[key], vis, txt),
                        functools.partial(self._trial_rows, key, qi, mcq, vis, txt),
                    )
                self.progress.advance("answer", items=1)
        finally:
            if hasattr(loaded, "close"):
                loaded.close()
        self.progress.advance("answer", items=len(items) - len(sets))

    def commit(
        self,
        spec: ShardSpec,
        items: list[InputItem],
        rows: list[dict[str, Any]],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> ShardStats:
        stats = StatsBuilder(spec.shard_id, QATrialsRow.schema_id(), opened=opened)
        for r in rows:
            error = r.pop("error_message", None)
            stats.add("ok" if r["reason"] not in ("media_error", "answer_failed") else r["reason"], error)
        stats.add_metric("requests", len(responses))
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built)
        return built

    def open_stream(self) -> ShardStream:
        return ShardStream(self, self.backend)

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        return next(iter(self.open_stream().run([(spec, items)])))


WORKERS = {"generate": GenerateWorker, "parse": ParseWorker, "answer": AnswerWorker}


def make_worker(cfg: CurateConfig, stage: str, progress: Progress) -> Any:
    return WORKERS[stage](cfg, progress)


def engines_of(cfg: CurateConfig, stage: str) -> tuple[Any, ...]:
    """The engines a worker of ``stage`` builds (what it asks of the cluster)."""
    if stage == "generate":
        return (cfg.generate.backend,) if cfg.import_mode == "none" else ()
    return (cfg.answer.backend,) if stage == "answer" else ()
