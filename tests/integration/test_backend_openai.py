"""The openai back end against real HTTP servers on 127.0.0.1 (a scripted one for faults)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams
from caprl_kit.backends.config import BackendConfig
from caprl_kit.io.media import load_video
from chat_server import ChatServer


def backend(server: ChatServer, **openai):
    opts = {"base_url": server.base_url, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **openai}
    return build_backend(BackendConfig(name="openai", model="tiny", openai=opts))


def test_429_then_200_is_retried() -> None:
    with ChatServer() as server:
        (resp,) = backend(server).generate([Request.user("RATE me")])
    assert resp.ok and resp.texts == ["echo 0: RATE me"]
    assert server.calls["RATE me"] == 2


def test_5xx_retried_until_success_and_until_exhausted() -> None:
    with ChatServer() as server:
        (ok,) = backend(server, max_retries=3).generate([Request.user("FLAKY a")])
        (gave_up,) = backend(server, max_retries=1).generate([Request.user("FLAKY b")])
    assert ok.ok and server.calls["FLAKY a"] == 3
    assert gave_up.error_kind == "retries_exhausted" and "503" in gave_up.error and server.calls["FLAKY b"] == 2


def test_retry_after_sets_the_wait_capped_by_backoff_max() -> None:
    with ChatServer() as server:  # "WAIT": 429 with Retry-After: 1 once (the backoff alone would wait <= 0.01 s)
        (waited,) = backend(server, backoff_max_s=5.0).generate([Request.user("WAIT a")])
        (capped,) = backend(server, backoff_max_s=0.05).generate([Request.user("WAIT b")])
    first, retry = server.arrived["WAIT a"]
    assert waited.ok and retry - first >= 0.95, f"retried after {retry - first:.3f} s"
    first, retry = server.arrived["WAIT b"]
    assert capped.ok and retry - first < 0.5, "Retry-After is capped by backoff_max_s"


def test_retry_after_header_values() -> None:
    from email.utils import format_datetime

    from caprl_kit.backends.openai_http import retry_after_s

    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_s("2") == 2.0 and retry_after_s("0.5") == 0.5 and retry_after_s("-3") == 0.0
    assert 28 <= retry_after_s(soon) <= 30.5 and retry_after_s(past) == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None and retry_after_s("nan") is None


def test_connections_are_kept_alive_and_bounded_by_max_concurrency() -> None:
    with ChatServer(keep_alive=True) as server:
        b = backend(server, max_concurrency=4)
        streamed = list(b.stream(Request.user(f"s {i}", id=str(i)) for i in range(300)))
        after_stream = server.connections
        batch = b.generate([Request.user(f"g {i}") for i in range(100)])
    assert len(streamed) == 300 and all(r.ok for r in streamed) and all(r.ok for r in batch)
    assert len(server.bodies) == 400
    assert after_stream <= 4, f"the stream opened {after_stream} connections for 300 requests"
    assert server.connections - after_stream <= 4, "generate opened more connections than max_concurrency"


def test_400_is_an_error_on_that_request_only() -> None:
    with ChatServer() as server:
        out = backend(server).generate([Request.user("fine 1"), Request.user("BAD one"), Request.user("fine 2")])
    assert [r.ok for r in out] == [True, False, True]
    assert out[1].error_kind == "bad_request"
    assert "400" in out[1].error and "prompt is too long" in out[1].error
    assert server.calls["BAD one"] == 1  # never retried


def test_concurrency_bound_is_respected_and_used() -> None:
    with ChatServer() as server:
        b = backend(server, max_concurrency=3)
        t0 = time.perf_counter()
        out = b.generate([Request.user(f"SLOW {i}") for i in range(12)])
        elapsed = time.perf_counter() - t0
    assert all(r.ok for r in out)
    assert server.max_in_flight == 3 and b.max_in_flight == 3
    assert elapsed >= 4 * 0.2 * 0.9  # 12 requests / 3 at a time x 0.2 s


def test_payload_images_videos_sampling_prefill(media_dir: Path) -> None:
    with ChatServer() as server:
        b = backend(server, video_as="frames")
        s = SamplingParams(n=2, temperature=0.6, top_p=0.9, top_k=5, max_tokens=10, seed=3, stop=("\n",),
                           repetition_penalty=1.05)
        clip = load_video(media_dir / "clip.mp4", max_frames=4)
        out = b.generate([
            Request.user("look", images=[media_dir / "img_0.png"], sampling=s, prefill="The answer is"),
            Request.user("watch", videos=[clip]),
        ])
        (seq,) = backend(server, video_as="jpeg_sequence").generate([Request.user("seq", videos=[clip])])
    assert out[0].texts == ["echo 0: look", "echo 1: look"] and out[0].completion_tokens == [3, 3]
    def sent(text: str) -> dict:  # requests travel concurrently: find each body by its text part, not by order
        return next(b for b in server.bodies if any(isinstance(c, list) and {"type": "text", "text": text} in c
                                                    for c in (m["content"] for m in b["messages"])))

    img_body, vid_body, seq_body = sent("look"), sent("watch"), sent("seq")
    assert {k: img_body[k] for k in ("n", "temperature", "top_p", "top_k", "max_tokens", "seed", "stop",
                                     "repetition_penalty", "continue_final_message", "add_generation_prompt")} == {
        "n": 2, "temperature": 0.6, "top_p": 0.9, "top_k": 5, "max_tokens": 10, "seed": 3, "stop": ["\n"],
        "repetition_penalty": 1.05, "continue_final_message": True, "add_generation_prompt": False}
    parts = img_body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1], validate=True)
    assert img_body["messages"][-1] == {"role": "assistant", "content": "The answer is"}
    frames = [p for p in vid_body["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(frames) == len(clip.frames)
    (video_part,) = [p for p in seq_body["messages"][0]["content"] if p["type"] == "video_url"]
    assert video_part["video_url"]["url"].startswith("data:video/jpeg;base64,")
    assert video_part["video_url"]["url"].count(",") == len(clip.frames)
    assert seq.ok


def test_bad_media_and_unreachable_server(media_dir: Path) -> None:
    with ChatServer() as server:
        out = backend(server).generate([Request.user("x", images=[media_dir / "notimage.png"]), Request.user("ok")])
    assert out[0].error_kind == "failed_to_decode" and out[1].ok
    dead = build_backend(BackendConfig(name="openai", model="m", openai={
        "base_url": "http://127.0.0.1:9/v1", "max_retries": 1, "backoff_base_s": 0.01, "timeout_s": 2}))
    (resp,) = dead.generate([Request.user("hello")])
    assert resp.error_kind == "retries_exhausted" and "ConnectError" in resp.error


def test_api_key_comes_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sekrit")
    b = build_backend(BackendConfig(name="openai", model="m", openai={"api_key_env": "MY_KEY"}))
    assert b.headers["Authorization"] == "Bearer sekrit"
