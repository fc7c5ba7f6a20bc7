"""In-process transformers back end (the embedded default): CPU or one GPU, images and videos for Qwen-VL.

Loads ``AutoModelForImageTextToText`` + ``AutoProcessor`` when the model config has a vision tower, else
``AutoModelForCausalLM`` + ``AutoTokenizer``. Prompts go through the model's own chat template; batches are
left-padded; ``n`` samples per prompt via ``num_return_sequences``. Requests with equal sampling are batched
together; if a batch fails as a whole (e.g. one prompt too long), its requests are retried one by one so only the
bad one carries the error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from caprl_kit.backends import loading
from caprl_kit.backends.base import BackendBase, Request, Response, SamplingParams, truncate_at_stop
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.loading import resolve_device
from caprl_kit.backends.prompts import Rendered, render_request
from caprl_kit.errors import BackendError, MediaError
from caprl_kit.log import get_logger

log = get_logger(__name__)

#: tokens a captioner must never emit: they are placeholders for vision features
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class TransformersBackend(BackendBase):
    name = "transformers"

    def __init__(self, cfg: BackendConfig, model: Any = None, processor: Any = None):
        super().__init__(cfg)
        if not cfg.model and model is None:
            raise BackendError("backend.model is required for the transformers back end")
        import torch

        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        if model is not None:  # an already-loaded model (e.g. a policy during training)
            self.model, self.processor = model, processor
            self.hf_config = model.config
        else:
            assert cfg.model is not None  # refused above when there is neither a model nor backend.model
            self.hf_config = loading.load_hf_config(cfg.model, trust_remote_code=cfg.trust_remote_code)
            self.model, self.processor = self._load(self.hf_config)
        self.is_vlm = loading.is_vision_language(self.hf_config)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        vocab = self.tokenizer.get_vocab()
        self.suppress = [vocab[t] for t in VISION_TOKENS if t in vocab]
        self._torch = torch

    def _load(self, hf_config: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        name, remote = str(self.cfg.model), self.cfg.trust_remote_code
        vlm = loading.is_vision_language(hf_config)
        t0 = time.perf_counter()
        model_cls, proc_cls = (
            (AutoModelForImageTextToText, AutoProcessor) if vlm else (AutoModelForCausalLM, AutoTokenizer)
        )
        # Any: transformers wraps PreTrainedModel.to with functools.wraps, which type-checks as unbound (self unfilled)
        model: Any = loading.load(
            "weights", name, model_cls.from_pretrained, name, trust_remote_code=remote, dtype=self.dtype
        )
        processor = loading.load("processor", name, proc_cls.from_pretrained, name, trust_remote_code=remote)
        model.to(self.device).eval()
        log.info(
            "loaded %s (%s) on %s in %.1fs", self.cfg.model, type(model).__name__, self.device, time.perf_counter() - t0
        )
        return model, processor

    # ------------------------------------------------------------------ prompts and media
    def _prepare(self, request: Request) -> Rendered:
        """Chat-templated text plus decoded media for one request (raises MediaError on bad media)."""
        return render_request(request, self.processor if self.is_vlm else self.tokenizer, self.is_vlm, self.model_id)

    def _encode(self, prepared: list[Rendered]) -> Any:
        texts = [p.text for p in prepared]
        if not self.is_vlm:
            return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        images = [im for p in prepared for im in p.images] or None
        clips = [v for p in prepared for v in p.videos]
        kwargs: dict[str, Any] = {}
        if clips:
            kwargs["videos"] = [c.frames for c in clips]
            kwargs["video_metadata"] = [
                {
                    "fps": c.sample_fps or 2.0,
                    "duration": c.duration,
                    "total_num_frames": len(c.frames),
                    "frames_indices": list(range(len(c.frames))),
                }
                for c in clips
            ]
            kwargs["do_sample_frames"] = False
        return self.processor(text=texts, images=images, return_tensors="pt", padding=True, **kwargs)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[Request]) -> list[Response]:
        if not self.is_vlm and any(r.media("image") or r.media("video") for r in requests):
            raise loading.text_only_error(self.model_id, self.hf_config)  # a wrong model, not one bad request
        responses: list[Response | None] = [None] * len(requests)
        prepared: dict[int, Rendered] = {}
        for i, req in enumerate(requests):
            try:
                prepared[i] = self._prepare(req)
            except MediaError as exc:
                responses[i] = Response.failed(exc.kind, str(exc), req.id)
            except Exception as exc:  # noqa: BLE001 - a malformed request fails alone
                responses[i] = Response.failed("bad_request", f"{type(exc).__name__}: {exc}", req.id)
        groups: dict[SamplingParams, list[int]] = {}
        for i in prepared:
            groups.setdefault(self.sampling_of(requests[i]), []).append(i)
        size = self.cfg.batch_size
        for sampling, idx in groups.items():
            for start in range(0, len(idx), size):
                chunk = idx[start : start + size]
                try:
                    outs = self._run(sampling, [prepared[i] for i in chunk])
                except Exception as exc:  # noqa: BLE001 - the batch fails as rows, then is retried one by one
                    if len(chunk) == 1:
                        outs = [Response.failed("generation_failed", f"{type(exc).__name__}: {exc}")]
                    else:
                        log.warning("batch of %d failed (%s); retrying one by one", len(chunk), exc)
                        outs = []
                        for i in chunk:
                            try:
                                outs += self._run(sampling, [prepared[i]])
                            except Exception as one_exc:  # noqa: BLE001 - this request alone fails
                                outs.append(
                                    Response.failed("generation_failed", f"{type(one_exc).__name__}: {one_exc}")
                                )
                for i, resp in zip(chunk, outs):
                    resp.id = requests[i].id
                    responses[i] = resp
        return [r for r in responses if r is not None]

    def _run(self, sampling: SamplingParams, prepared: list[Rendered]) -> list[Response]:
        torch = self._torch
        t0 = time.perf_counter()
        inputs = self._encode(prepared).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        do_sample = sampling.temperature > 0
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_tokens,
            do_sample=do_sample,
            num_return_sequences=sampling.n,
            repetition_penalty=sampling.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            suppress_tokens=self.suppress or None,
        )
        if do_sample:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or 0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[:, prompt_len:]
        eos_ids = self._eos_ids()
        latency = time.perf_counter() - t0
        responses = []
        for b in range(len(prepared)):
            resp = Response(prompt_tokens=int(inputs["attention_mask"][b].sum()), latency_s=latency)
            for k in range(sampling.n):
                row = new[b * sampling.n + k].tolist()
                n_tok, reason = len(row), "length"
                for pos, tok in enumerate(row):
                    if tok in eos_ids:
                        n_tok, reason = pos + 1, "stop"
                        break
                text = self.tokenizer.decode(row[:n_tok], skip_special_tokens=True)
                text, stopped = truncate_at_stop(text, sampling.stop)
                resp.texts.append(text)
                resp.completion_tokens.append(n_tok)
                resp.finish_reasons.append("stop" if stopped else reason)
            responses.append(resp)
        return responses

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
