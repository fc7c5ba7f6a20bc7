"""benchmarks/gpu_timing_server.py, the measuring instrument of the openai path's GPU-timing benchmark: real HTTP
through ``OpenAIBackend.stream`` to an emulated continuous-batching engine (tiny step time, so this runs fast)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request
from caprl_kit.backends.config import BackendConfig

pytest.importorskip("fastapi")  # the `serve` extra
pytest.importorskip("uvicorn")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gpu_timing_server import EngineConfig, lengths_for, serve_thread  # noqa: E402

CFG = EngineConfig(max_running=4, step_s=0.002, prefill_steps=1, median_tokens=20, sigma=0.6, seed=7)


def _backend(url: str, concurrency: int):
    return build_backend(BackendConfig(name="openai", model="gpu-timing", sampling={"max_tokens": 2048},
                                       openai={"base_url": url, "max_concurrency": concurrency}))


def _length(text: str) -> int:
    """What the server assigns to ``Request.user(text)`` (the backend sends exactly these messages)."""
    return lengths_for(CFG, {"messages": [{"role": "user", "content": text}]})[0]


def _stats(url: str) -> dict:
    return httpx.get(url.rsplit("/v1", 1)[0] + "/stats").json()


def test_out_of_order_deterministic_and_full() -> None:
    texts = [f"item {i}" for i in range(200)]
    long_text = max(texts, key=_length)
    short_text = min(texts, key=_length)
    assert _length(long_text) > 3 * _length(short_text)
    # (i) a short request sent after a long one comes back first (10 ms steps: ~1 s for the long one, so a stalled
    # thread on a busy machine cannot let it finish before the short one is sent)
    def long_then_short():
        yield Request.user(long_text, id="long")
        time.sleep(0.3)  # the stream sends each request as it gets it: the long one reaches the engine first
        yield Request.user(short_text, id="short")

    with serve_thread(EngineConfig(**{**CFG.__dict__, "step_s": 0.01})) as url:
        out = list(_backend(url, 8).stream(long_then_short()))
        admitted = _stats(url)["lengths"]
    assert admitted == [_length(long_text) + 1, _length(short_text) + 1]  # the long one was in the engine first
    assert [r.id for r in out] == ["short", "long"]
    assert [r.completion_tokens for r in out] == [[_length(short_text)], [_length(long_text)]]
    assert all(r.ok and r.finish_reasons == ["stop"] for r in out)
    assert len(out[1].text.split()) == _length(long_text)

    with serve_thread(CFG) as url:
        # (ii) lengths depend on the request's content only, not on arrival order or on what else runs
        some = texts[:24]
        forward = {r.id: r.completion_tokens[0] for r in _backend(url, 8).stream(
            Request.user(t, id=t) for t in some)}
        backward = {r.id: r.completion_tokens[0] for r in _backend(url, 3).stream(
            Request.user(t, id=t) for t in reversed(some))}
        assert forward == backward == {t: _length(t) for t in some}
        # an image part (a data URL, never decoded) is accepted; a max_tokens cut is reported as such
        image = Image.new("RGB", (32, 32), (200, 10, 10))
        be = build_backend(BackendConfig(name="openai", model="gpu-timing", sampling={"max_tokens": 3},
                                         openai={"base_url": url}))
        (img,) = be.generate([Request.user("describe", images=[image])])
        assert img.ok and img.completion_tokens == [3] and img.finish_reasons == ["length"]

        # (iii) with more requests in flight than slots, every slot is busy at every step while requests queue
        httpx.post(url.rsplit("/v1", 1)[0] + "/reset").raise_for_status()
        many = texts[:48]
        got = list(_backend(url, 16).stream(Request.user(t, id=t) for t in many))
        assert sorted(r.id for r in got) == sorted(many) and all(r.ok for r in got)
        st = _stats(url)
    assert st["completed_sequences"] == len(many)
    assert st["max_waiting"] > 0 and st["queued_steps"] > 0
    assert st["occupancy_while_queued"] >= 0.99
    assert st["occupancy_before_tail"] >= 0.9, st
    assert sum(st["lengths"]) == sum(_length(t) + CFG.prefill_steps for t in many)
    assert st["busy_slot_steps"] == sum(st["lengths"])  # every admitted step was run, none lost or doubled
