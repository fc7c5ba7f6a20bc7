"""In-process ``vllm.LLM`` back end: multimodal prompts (images, videos as frames + metadata), n samples, chat
templates, and the knobs a GPU user needs (tensor parallel size, memory utilisation, max model len, media limits).

Prompts are rendered with the model's own chat template (so an assistant prefill can be continued) and sent with
``multi_modal_data``; vLLM's processor then resizes images per the model's processor config. Needs the ``vllm``
extra (GPU) or the vLLM CPU environment (``envs/setup_vllm.sh``). Scripts that build it need the
``if __name__ == "__main__":`` guard: vLLM spawns worker processes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from caprl_kit._optional import require
from caprl_kit.backends import loading
from caprl_kit.backends.base import IDLE, BackendBase, Request, Response, SamplingParams
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.prompts import render_request
from caprl_kit.errors import BackendError, MediaError
from caprl_kit.io.media import VideoClip
from caprl_kit.log import get_logger

log = get_logger(__name__)


def video_item(clip: VideoClip) -> tuple[Any, dict[str, Any]]:
    """(frames array, metadata) — the video form vLLM's Qwen-VL processors require."""
    import numpy as np

    frames = np.stack([np.asarray(f) for f in clip.frames])
    meta = {
        "total_num_frames": len(clip.frames),
        "fps": clip.sample_fps or 2.0,
        "duration": clip.duration,
        "video_backend": "caprl_kit",
        "frames_indices": list(range(len(clip.frames))),
        "do_sample_frames": False,
    }
    return frames, meta


class VLLMBackend(BackendBase):
    name = "vllm"

    def __init__(self, cfg: BackendConfig):
        super().__init__(cfg)
        if not cfg.model:
            raise BackendError("backend.model is required for the vllm back end")
        model = loading.resolve_model(cfg.model)  # before the engine starts: a bad path fails in a second
        torch = require("torch", extra="vllm")
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # CPU build: keep internal sockets on loopback
        vllm = require("vllm", extra="vllm")
        from transformers import AutoProcessor, AutoTokenizer

        opts = cfg.vllm
        kwargs: dict[str, Any] = dict(
            model=model,
            trust_remote_code=cfg.trust_remote_code,
            tensor_parallel_size=opts.tensor_parallel_size,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            enforce_eager=opts.enforce_eager,
            dtype=cfg.dtype,
        )
        if opts.max_model_len:
            kwargs["max_model_len"] = opts.max_model_len
        if opts.max_num_seqs:
            kwargs["max_num_seqs"] = opts.max_num_seqs
        self.hf_config = loading.load_hf_config(model, trust_remote_code=cfg.trust_remote_code)
        self.is_vlm = loading.is_vision_language(self.hf_config)
        if self.is_vlm:
            kwargs["limit_mm_per_prompt"] = dict(opts.limit_mm_per_prompt)
        kwargs.update(opts.extra)
        t0 = time.perf_counter()
        self.llm = loading.load("weights (vLLM engine)", model, vllm.LLM, **kwargs)
        log.info("vLLM engine for %s ready in %.1fs", cfg.model, time.perf_counter() - t0)
        loader = AutoProcessor if self.is_vlm else AutoTokenizer
        self.template = loading.load(
            "processor", model, loader.from_pretrained, model, trust_remote_code=cfg.trust_remote_code
        )
        self._vllm = vllm
        self._ids = itertools.count()

    def _params(self, s: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k is not None else -1,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=s.seed,
            repetition_penalty=s.repetition_penalty,
        )

    def _prompt(self, request: Request) -> dict[str, Any]:
        r = render_request(request, self.template, self.is_vlm, self.model_id)
        prompt: dict[str, Any] = {"prompt": r.text}
        mm: dict[str, Any] = {}
        if r.images:
            mm["image"] = r.images if len(r.images) > 1 else r.images[0]
        if r.videos:
            items = [video_item(c) for c in r.videos]
            mm["video"] = items if len(items) > 1 else items[0]
        if mm:
            prompt["multi_modal_data"] = mm
        return prompt

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        if not self.is_vlm and any(r.media("image") or r.media("video") for r in requests):
            raise loading.text_only_error(self.model_id, self.hf_config)  # a wrong model, not one bad request
        responses: list[Response | None] = [None] * len(requests)
        prompts, params, index = [], [], []
        for i, req in enumerate(requests):
            try:
                prompts.append(self._prompt(req))
                params.append(self._params(self.sampling_of(req)))
                index.append(i)
            except MediaError as exc:
                responses[i] = Response.failed(exc.kind, str(exc), req.id)
            except Exception as exc:  # noqa: BLE001 - a malformed request fails alone
                responses[i] = Response.failed("bad_request", f"{type(exc).__name__}: {exc}", req.id)
        if prompts:
            for i, resp in zip(index, self._run(prompts, params)):
                resp.id = requests[i].id
                responses[i] = resp
        return [r for r in responses if r is not None]

    def _run(self, prompts: list[dict[str, Any]], params: list[Any]) -> list[Response]:
        t0 = time.perf_counter()
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - the batch fails as rows, then is retried one by one
            if len(prompts) == 1:
                return [Response.failed("generation_failed", f"{type(exc).__name__}: {exc}")]
            log.warning("vLLM batch of %d failed (%s); retrying one by one", len(prompts), exc)
            return [r for p, s in zip(prompts, params) for r in self._run([p], [s])]
        latency = time.perf_counter() - t0
        out = []
        for o in outputs:
            out.append(
                Response(
                    texts=[c.text for c in o.outputs],
                    prompt_tokens=len(o.prompt_token_ids or []),
                    completion_tokens=[len(c.token_ids) for c in o.outputs],
                    finish_reasons=[c.finish_reason or "stop" for c in o.outputs],
                    latency_s=latency,
                )
            )
        return out

    @property
    def in_flight(self) -> int:
        """Twice the scheduler's batch limit, so a finished sequence's slot is refilled at the next step."""
        return 2 * (self.cfg.vllm.max_num_seqs or 256)

    def stream(self, requests: Iterable[Request], **_: Any) -> Iterator[Response]:
        """Continuous batching from the outside: requests go into vLLM's engine (``add_request``) while it steps,
        up to ``in_flight`` at a time, and each response is yielded when its sequence finishes, so the scheduler
        never waits for a batch's longest caption."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        pending: dict[str, tuple[str | None, float]] = {}
        it = iter(requests)
        exhausted = False
        burst = max(1, (self.cfg.vllm.max_num_seqs or 256) // 4)
        try:
            while True:
                added = 0  # at most a burst between steps: a request that waits for its decode never stalls the engine
                while not exhausted and len(pending) < self.in_flight and (added < burst or not pending):
                    added += 1
                    req = next(it, None)
                    if req is None:
                        exhausted = True
                        break
                    if req is IDLE:  # a live feed with nothing new: step what the engine holds
                        if not pending:  # nothing to step either (a commit in flight): never spin
                            time.sleep(0.005)
                        break
                    if not self.is_vlm and (req.media("image") or req.media("video")):
                        raise loading.text_only_error(self.model_id, self.hf_config)
                    rid = f"caprl-{next(self._ids)}"
                    try:
                        params = self._params(self.sampling_of(req))
                        params.output_kind = RequestOutputKind.FINAL_ONLY
                        engine.add_request(rid, self._prompt(req), params)
                    except MediaError as exc:
                        yield Response.failed(exc.kind, str(exc), req.id)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a prompt longer than max_model_len
                        yield Response.failed("bad_request", f"{type(exc).__name__}: {exc}", req.id)
                        continue
                    pending[rid] = (req.id, time.perf_counter())  # vLLM holds the processed media, we do not
                if not pending:
                    if exhausted:
                        return
                    continue
                try:
                    outputs = engine.step()
                except Exception as exc:  # noqa: BLE001 - the engine failed as a whole: engine-level, never a row
                    if _engine_dead(exc):  # ... unless it is gone: every later step fails too, and the failed rows
                        from caprl_kit.errors import EngineDown  # would be committed as done shards

                        raise EngineDown(
                            f"vLLM's engine died ({type(exc).__name__}: {exc}) with {len(pending)} "
                            "request(s) in it; their shards were not written (vLLM's log above has "
                            "the cause). Fix it and rerun: finished shards are kept"
                        ) from None
                    log.warning("vLLM engine step failed (%s); failing %d request(s) in flight", exc, len(pending))
                    for rid, (req_id, _started) in list(pending.items()):
                        engine.abort_request([rid])
                        yield Response.failed("engine_error", f"{type(exc).__name__}: {exc}", req_id)
                    pending.clear()
                    continue
                for o in outputs:
                    if not o.finished or o.request_id not in pending:
                        continue
                    req_id, t0 = pending.pop(o.request_id)
                    yield Response(
                        texts=[c.text for c in o.outputs],
                        prompt_tokens=len(o.prompt_token_ids or []),
                        completion_tokens=[len(c.token_ids) for c in o.outputs],
                        finish_reasons=[c.finish_reason or "stop" for c in o.outputs],
                        latency_s=time.perf_counter() - t0,
                        id=req_id,
                    )
        finally:
            if pending:  # the consumer stopped early: nothing may linger in the engine
                engine.abort_request(list(pending))

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            with contextlib.suppress(Exception):  # older/newer vLLM: fall back to garbage collection
                llm.llm_engine.engine_core.shutdown()
            del llm


def _engine_dead(exc: BaseException) -> bool:
    """vLLM's engine process is gone (``EngineDeadError``): every later step fails the same way."""
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # another vLLM layout: recognise it by name
        return type(exc).__name__ == "EngineDeadError"
    return isinstance(exc, EngineDeadError)
