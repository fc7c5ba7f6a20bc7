"""The annotate worker: one shard of input items -> caption rows -> a Parquet shard + its stats sidecar.

load media (background threads, overlapping generation) -> adaptive batches by estimated tokens -> ``generate``
-> rows in input order -> ``RunDir.commit_shard``. Bad media and failed generations become rows with a ``status``
and an ``error_message``; the worker raises only when the shard as a whole cannot be written.
"""

from __future__ import annotations

import time
from typing import Any, Generator, Iterator

import pyarrow as pa

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Backend, Request, Response, SamplingParams, check_engine_up
from caprl_kit.commands import NullProgress, Progress
from caprl_kit.errors import MediaError
from caprl_kit.io.batching import Loaded, cut_batches
from caprl_kit.io.decode import decode_map
from caprl_kit.io.media import VideoClip, load_media
from caprl_kit.io.readers import InputItem
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.log import get_logger
from caprl_kit.prompts import PROMPTS
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)


def carry_schema(names: list[str], items: list[InputItem]) -> pa.Schema | None:
    """Arrow types of the user's carry-through columns, from the first non-null value (else string)."""
    if not names:
        return None
    fields = []
    for name in names:
        value = next((it.extra.get(name) for it in items if it.extra.get(name) is not None), None)
        typ = {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}.get(type(value), pa.string())
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


class Annotator:
    """Per-process worker state (the back end is built once); ``annotator(spec, items)`` does one shard."""

    def __init__(self, cfg: AnnotateConfig, progress: Progress | None = None, backend: Backend | None = None,
                 seen_hashes: dict[str, str] | None = None):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.backend = backend or build_backend(cfg.backend)
        self.run = RunDir(cfg.output_dir, AnnotationRow)  # type: ignore[arg-type]
        self.sampling = SamplingParams.from_config(cfg.backend.sampling)
        self.seen = seen_hashes if seen_hashes is not None else {}

    # ------------------------------------------------------------------ media
    def _load(self, item: InputItem) -> Loaded:
        try:
            media, raw = load_media(item.source or None, item.data, item.media_type, self.cfg.media)
        except MediaError as exc:
            return Loaded(item, error=MediaError(exc.kind, item.source or item.key, exc.reason))
        return Loaded(item, media=media, raw=raw if self.cfg.output.embed_media else None)

    def _loaded(self, items: list[InputItem]) -> Generator[Loaded, None, None]:
        # decodes run up to a window ahead while the caller generates; Ctrl-C cancels them (io/decode.py)
        return decode_map(self._load, items, self.cfg.batching.decode_workers, ahead=self.cfg.batching.window)

    # ------------------------------------------------------------------ prompts and rows
    def prompt_for(self, media_type: str) -> tuple[str, str]:
        p = self.cfg.prompt
        if p.text:
            return "custom", p.text
        name = p.video if media_type == "video" else p.image
        return name, PROMPTS.get(name)

    def _request(self, ld: Loaded) -> Request:
        _, text = self.prompt_for(ld.item.media_type)
        if isinstance(ld.media, VideoClip):
            return Request.user(text, videos=[ld.media], system=self.cfg.prompt.system, id=ld.item.key)
        return Request.user(text, images=[ld.media.image], system=self.cfg.prompt.system, id=ld.item.key)  # type: ignore[union-attr]

    def _row(self, ld: Loaded, resp: Response | None, status: str, error: str | None) -> dict[str, Any]:
        prompt_id, prompt = self.prompt_for(ld.item.media_type)
        s = self.sampling
        media = ld.media
        row = AnnotationRow(
            key=ld.item.key,
            source=ld.item.source,
            media_type=ld.item.media_type,  # type: ignore[arg-type]
            media_bytes=ld.raw if self.cfg.output.embed_media else None,
            caption=resp.texts[0] if resp and resp.ok and resp.texts else None,
            captions=resp.texts if resp and resp.ok else [],
            model=self.backend.model_id,
            prompt_id=prompt_id,
            prompt=prompt,
            sampling={"n": s.n, "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
                      "max_tokens": s.max_tokens, "seed": s.seed, "repetition_penalty": s.repetition_penalty},
            prompt_tokens=resp.prompt_tokens if resp else None,
            completion_tokens=resp.completion_tokens if resp and resp.ok else [],
            finish_reasons=resp.finish_reasons if resp and resp.ok else [],
            width=media.width if media is not None else None,
            height=media.height if media is not None else None,
            n_frames=len(media.frames) if isinstance(media, VideoClip) else None,
            frame_timestamps=media.timestamps if isinstance(media, VideoClip) else None,
            latency_s=round(resp.latency_s, 4) if resp else None,
            content_hash=media.content_hash if media is not None else None,
            status=status,
            error_message=error,
        ).model_dump()
        row.update(ld.item.extra)
        return row

    # ------------------------------------------------------------------ the shard
    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        loaded = self._loaded(items)
        try:
            return self._shard(spec, items, loaded)
        finally:
            loaded.close()  # on Ctrl-C or an error: pending decodes are cancelled, not waited for

    def _shard(self, spec: ShardSpec, items: list[InputItem], loaded_iter: Iterator[Loaded]) -> ShardStats:
        stats = StatsBuilder(spec.shard_id, AnnotationRow.schema_id())
        rows: list[dict[str, Any] | None] = [None] * len(items)
        window = self.cfg.batching.window
        gen_s = 0.0
        all_responses: list[Response] = []
        for start in range(0, len(items), window):
            chunk = [next(loaded_iter) for _ in range(min(window, len(items) - start))]
            ready = []
            for off, ld in enumerate(chunk):
                i = start + off
                if ld.error is not None:
                    rows[i] = self._row(ld, None, ld.error.kind, str(ld.error))
                    self.progress.advance("annotate", items=1, failed=1)
                    continue
                h = ld.media.content_hash if ld.media is not None else None  # type: ignore[union-attr]
                if self.cfg.output.dedup and h is not None:
                    if h in self.seen:
                        rows[i] = self._row(ld, None, "duplicate", f"same content as {self.seen[h]}")
                        self.progress.advance("annotate", items=1)
                        continue
                    self.seen[h] = ld.item.key
                ready.append((i, ld))
            for batch in cut_batches([ld for _, ld in ready], self.cfg.backend.batch_size,
                                     self.cfg.batching.max_batch_tokens):
                t0 = time.perf_counter()
                responses = self.backend.generate([self._request(ready[j][1]) for j in batch])
                gen_s += time.perf_counter() - t0
                all_responses += responses
                failed = tokens = 0
                for j, resp in zip(batch, responses):
                    i, ld = ready[j]
                    if resp.ok:
                        rows[i] = self._row(ld, resp, "ok", None)
                        tokens += sum(resp.completion_tokens)
                    else:
                        rows[i] = self._row(ld, resp, resp.error_kind or "generation_failed", resp.error)
                        failed += 1
                self.progress.advance("annotate", items=len(batch), failed=failed, tokens=tokens)
        check_engine_up(all_responses, f"annotate with {self.cfg.backend.name}:{self.cfg.backend.model}")
        final = [r for r in rows if r is not None]
        assert len(final) == len(items), "every input item yields exactly one row"
        for r in final:
            stats.add(r["status"], r["error_message"])
            stats.add_metric("completion_tokens", sum(r["completion_tokens"]))
            stats.add_metric("prompt_tokens", r["prompt_tokens"] or 0)
        stats.add_metric("generate_s", gen_s)
        built = stats.build()
        self.run.commit_shard(spec.shard_id, final, built, carry_schema(self.cfg.input.carry_columns, items))
        return built

    def close(self) -> None:
        self.backend.close()
