"""The annotate stage: input items -> caption rows -> Parquet shards + stats sidecars, on the streaming engine.

Per item: load media (background threads, a bounded window ahead) -> one request -> its row. ``ShardStream`` keeps
the back end fed across batches and shards and commits each shard when its last caption arrives. Bad media and
failed generations become rows with a ``status`` and an ``error_message``; an engine that fails every request of
a shard stops the run (nothing of that shard is committed).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from caprl_kit.annotate.config import AnnotateConfig, VideoWindowsConfig
from caprl_kit.backends import build_backend
from caprl_kit.backends.base import RETRYABLE_KINDS, Backend, Request, Response, SamplingParams
from caprl_kit.backends.pool import release
from caprl_kit.errors import MediaError
from caprl_kit.io.batching import Loaded
from caprl_kit.io.config import MediaConfig
from caprl_kit.io.decode import decode_map
from caprl_kit.io.locators import item_payload
from caprl_kit.io.media import ImageWire, LoadedImage, VideoClip, load_media, url_limits
from caprl_kit.io.parquet import user_columns
from caprl_kit.io.readers import InputItem
from caprl_kit.io.rundir import RunDir
from caprl_kit.io.shards import ShardSpec
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.io.windows import WindowedVideo, load_windows_media, merge_captions
from caprl_kit.log import get_logger
from caprl_kit.monitors import FLAG_METRIC, caption_flags, clean_caption, flag_counts
from caprl_kit.progress import NullProgress, Progress
from caprl_kit.prompts import PROMPTS
from caprl_kit.runners.stream import ShardStream, Work
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)


def load_item(
    item: InputItem,
    media_cfg: MediaConfig,
    keep_raw: bool,
    wire: ImageWire | None = None,
    windows: VideoWindowsConfig | None = None,
) -> Loaded:
    """One input item's media decoded with ``media`` settings (an image in the back end's wire form when it has
    one; a video in ``windows`` when set); a bad file is a ``Loaded`` with its ``MediaError`` (naming the item's
    source, else its key). ``keep_raw``: keep the encoded bytes (``output.embed_media``). Module-level so decode
    processes can run it (``decode.processes``)."""
    try:
        payload = item_payload(item, media_cfg.max_file_bytes, url_limits(media_cfg))
        media: LoadedImage | VideoClip | WindowedVideo
        if windows is not None and item.media_type == "video":
            media, raw = load_windows_media(
                item.source or None, payload, media_cfg, windows.seconds, windows.min_last_s, wire
            )
        else:
            media, raw = load_media(item.source or None, payload, item.media_type, media_cfg, wire)
    except MediaError as exc:
        return Loaded(item, error=MediaError(exc.kind, item.source or item.key, exc.reason))
    return Loaded(item, media=media, raw=raw if keep_raw else None)


class Annotator:
    """Per-process worker state (the back end is built once); ``annotator(spec, items)`` does one shard."""

    def __init__(
        self,
        cfg: AnnotateConfig,
        progress: Progress | None = None,
        backend: Backend | None = None,
        seen_hashes: dict[str, str] | None = None,
        retry: frozenset[int] = frozenset(),
    ):
        self.cfg = cfg
        self.progress = progress or NullProgress()
        self.backend = backend or build_backend(cfg.backend)
        self.run = RunDir(cfg.output_dir, AnnotationRow)  # type: ignore[arg-type]  # output_dir is set: begin() refuses a run without one
        self.sampling = SamplingParams.from_config(cfg.backend.sampling)
        self.seen = seen_hashes if seen_hashes is not None else {}
        self.retry = retry  # committed shards whose retryable rows are redone (``--retry-failed``)
        self.sent: dict[int, Counter[str]] = {}  # per open shard: images sent as their own bytes / encoded here

    # ------------------------------------------------------------------ media
    def _loaded(self, items: list[InputItem]) -> Generator[Loaded, None, None]:
        # decodes run a bounded window ahead while the engine works (an engine that keeps many requests in flight,
        # like vllm, takes them in bursts: up to 64 ahead); Ctrl-C cancels them (io/decode.py). The loader is a
        # module-level function, not a method: decode processes get it pickled, and self holds the engine.
        d = self.cfg.decode
        ahead = d.ahead or max(self.cfg.batching.window, min(64, getattr(self.backend, "in_flight", 0) // 2))
        load = functools.partial(
            load_item,
            media_cfg=self.cfg.media,
            keep_raw=self.cfg.output.embed_media,
            wire=self.backend.image_wire,
            windows=self.cfg.video_windows,
        )
        return decode_map(load, items, d.workers, ahead=ahead, processes=d.processes)

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
            return Request.user(text, videos=[ld.media], system=self.cfg.prompt.system)
        return Request.user(text, images=[ld.media.payload], system=self.cfg.prompt.system)  # type: ignore[union-attr]  # not a video, so a LoadedImage

    def _row(self, ld: Loaded, resp: Response | None, status: str, error: str | None) -> dict[str, Any]:
        prompt_id, prompt = self.prompt_for(ld.item.media_type)
        s = self.sampling
        media = ld.media
        row = AnnotationRow(
            key=ld.item.key,
            source=ld.item.source,
            media_type=ld.item.media_type,
            media_bytes=ld.raw if self.cfg.output.embed_media else None,
            caption=resp.texts[0] if resp and resp.ok and resp.texts else None,
            captions=resp.texts if resp and resp.ok else [],
            model=self.backend.model_id,
            prompt_id=prompt_id,
            prompt=prompt,
            sampling={
                "n": s.n,
                "temperature": s.temperature,
                "top_p": s.top_p,
                "top_k": s.top_k,
                "max_tokens": s.max_tokens,
                "seed": s.seed,
                "repetition_penalty": s.repetition_penalty,
            },
            prompt_tokens=resp.prompt_tokens if resp else None,
            completion_tokens=resp.completion_tokens if resp and resp.ok else [],
            finish_reasons=resp.finish_reasons if resp and resp.ok else [],
            caption_flags=self._flags(resp) if resp and resp.ok else [],
            caption_clean=clean_caption(resp.texts[0], self.cfg.monitors)
            if self.cfg.output.clean and resp and resp.ok and resp.texts
            else None,
            width=media.width if media is not None else None,
            height=media.height if media is not None else None,
            n_frames=len(media.frames) if isinstance(media, VideoClip) else None,
            frame_timestamps=media.timestamps if isinstance(media, VideoClip) else None,
            windows=None,
            latency_s=round(resp.latency_s, 4) if resp else None,
            content_hash=media.content_hash if media is not None else None,
            status=status,
            error_message=error,
        ).model_dump()
        row.update(ld.item.extra)
        return row

    def _flags(self, resp: Response) -> list[list[str]]:
        reasons = list(resp.finish_reasons) + [None] * (len(resp.texts) - len(resp.finish_reasons))
        return [caption_flags(text, reason, self.cfg.monitors) for text, reason in zip(resp.texts, reasons)]

    # ------------------------------------------------------------------ the stage (runners/stream.py)
    @property
    def engine_label(self) -> str:
        return f"annotate with {self.cfg.backend.name}:{self.cfg.backend.model}"

    def _kept(self, spec: ShardSpec) -> dict[str, dict[str, Any]]:
        """A shard whose failed rows are retried: its rows that stay as they are, by key."""
        if spec.shard_id not in self.retry:
            return {}
        rows = self.run.read_rows(spec.shard_id)
        return {r["key"]: r for r in rows if r["status"] not in RETRYABLE_KINDS}

    def plan(self, spec: ShardSpec, items: list[InputItem]) -> Iterator[Work]:
        kept = self._kept(spec)
        loaded = self._loaded([it for it in items if it.key not in kept])
        sent = self.sent[spec.shard_id] = Counter()  # a redone shard counts afresh
        try:
            for it in items:
                if it.key in kept:  # an ok (or not retryable) row of a retried shard: written again as it was
                    yield Work([], functools.partial(_as_is, kept[it.key]))
                    continue
                ld = next(loaded)
                if ld.error is not None:
                    self.progress.advance("annotate", items=1, failed=1)
                    yield Work([], functools.partial(self._media_failed, ld))
                    continue
                h = ld.media.content_hash if ld.media is not None else None
                # an item is never a duplicate of itself: a shard redone after a broken stream plans its items
                # again, and the first of each content must keep its caption
                if self.cfg.output.dedup and h is not None and self.seen.setdefault(h, ld.item.key) != ld.item.key:
                    self.progress.advance("annotate", items=1)
                    yield Work([], functools.partial(self._duplicate, ld, self.seen[h]))
                    continue
                if isinstance(ld.media, LoadedImage) and ld.media.encoded is not None:
                    sent[ld.media.encoded.sent] += 1
                if isinstance(ld.media, WindowedVideo):  # one request per window, one row from all of them
                    _, text = self.prompt_for("video")
                    requests = [Request.user(text, videos=[w], system=self.cfg.prompt.system) for w in ld.media.windows]
                    yield Work(requests, functools.partial(self._windows_answered, ld))
                    continue
                yield Work([self._request(ld)], functools.partial(self._answered, ld))
        finally:
            loaded.close()  # on Ctrl-C or an error: pending decodes are cancelled, not waited for

    def _media_failed(self, ld: Loaded, _: list[Response]) -> list[dict[str, Any]]:
        assert ld.error is not None
        return [self._row(ld, None, ld.error.kind, str(ld.error))]

    def _duplicate(self, ld: Loaded, first: str, _: list[Response]) -> list[dict[str, Any]]:
        return [self._row(ld, None, "duplicate", f"same content as {first}")]

    def _answered(self, ld: Loaded, got: list[Response]) -> list[dict[str, Any]]:
        return [self._finish(ld, got[0])]

    def _windows_answered(self, ld: Loaded, got: list[Response]) -> list[dict[str, Any]]:
        """A video captioned in windows: its row holds every window's captions with its span, and as caption(s) the
        windows' captions joined with absolute timestamps (sample k joins the windows' k-th captions); a window that
        failed on its own fails the row, naming the window."""
        video = ld.media
        assert isinstance(video, WindowedVideo)
        spans = video.spans
        bad = next(((i, r) for i, r in enumerate(got) if not r.ok), None)
        if bad is not None:
            i, r = bad
            failed = Response.failed(
                r.error_kind or "generation_failed", f"window {i} [{spans[i][0]:.1f}-{spans[i][1]:.1f} s]: {r.error}"
            )
            return [self._finish(ld, failed)]
        n = min(len(r.texts) for r in got)
        merged = Response(
            texts=[merge_captions([r.texts[k] for r in got], spans) for k in range(n)],
            prompt_tokens=sum(r.prompt_tokens or 0 for r in got),
            completion_tokens=[
                sum(r.completion_tokens[k] for r in got if k < len(r.completion_tokens)) for k in range(n)
            ],
            finish_reasons=[
                "length" if any(k < len(r.finish_reasons) and r.finish_reasons[k] == "length" for r in got) else "stop"
                for k in range(n)
            ],
            latency_s=max(r.latency_s for r in got),
        )
        row = self._finish(ld, merged)
        row.update(
            windows=[
                {
                    "start_s": start,
                    "end_s": end,
                    "captions": r.texts,
                    "n_frames": len(w.frames),
                    "completion_tokens": r.completion_tokens,
                }
                for (start, end), w, r in zip(spans, video.windows, got)
            ],
            n_frames=sum(len(w.frames) for w in video.windows),
            frame_timestamps=[round(start + t, 3) for (start, _), w in zip(spans, video.windows) for t in w.timestamps],
        )
        return [row]

    def _finish(self, ld: Loaded, resp: Response) -> dict[str, Any]:
        if resp.ok:
            self.progress.advance("annotate", items=1, tokens=sum(resp.completion_tokens))
            return self._row(ld, resp, "ok", None)
        self.progress.advance("annotate", items=1, failed=1)
        return self._row(ld, resp, resp.error_kind or "generation_failed", resp.error)

    def commit(
        self,
        spec: ShardSpec,
        items: list[InputItem],
        rows: list[dict[str, Any]],
        responses: Sequence[Response],
        opened: tuple[str, float],
    ) -> ShardStats:
        assert len(rows) == len(items), "every input item yields exactly one row"
        stats = StatsBuilder(spec.shard_id, AnnotationRow.schema_id(), opened=opened)
        for r in rows:
            stats.add(r["status"], r["error_message"])
            stats.add_metric("completion_tokens", sum(r["completion_tokens"]))
            stats.add_metric("prompt_tokens", r["prompt_tokens"] or 0)
            for name, count in flag_counts(r["caption_flags"]).items():
                stats.add_metric(FLAG_METRIC.format(name), count)
        for how, count in self.sent.pop(spec.shard_id, Counter()).items():
            stats.add_metric(f"images_sent_{how}", count)  # original: the file's own bytes; encoded: made here
        built = stats.build()
        self.run.commit_shard(spec.shard_id, rows, built, user_columns(self.cfg.input.carry_columns, rows))
        return built

    def open_stream(self) -> ShardStream:
        """The engine over any number of shards (the local runner feeds it every shard)."""
        return ShardStream(
            self, self.backend, window=self.cfg.batching.window, max_batch_tokens=self.cfg.batching.max_batch_tokens
        )

    def __call__(self, spec: ShardSpec, items: list[InputItem]) -> ShardStats:
        """One shard (runners that hand out shards one at a time)."""
        return next(iter(self.open_stream().run([(spec, items)])))

    def close(self) -> None:
        release(self.backend)


def _as_is(row: dict[str, Any], _: list[Response]) -> list[dict[str, Any]]:
    """A kept row of a retried shard, written again unchanged."""
    return [row]
