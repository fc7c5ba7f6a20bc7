"""The transformers back end, for real, on the tiny Qwen2.5-VL captioner and the tiny Qwen2 answerer."""

from __future__ import annotations

from pathlib import Path

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams
from caprl_kit.backends.config import BackendConfig
from caprl_kit.errors import BackendError
from caprl_kit.io.media import load_video

PROMPT = "Please describe this image in detail."


@pytest.fixture(scope="module")
def captioner(tiny_models):
    return build_backend(BackendConfig(name="transformers", model=str(tiny_models["captioner"]), batch_size=4,
                                       sampling={"max_tokens": 8}))


@pytest.fixture(scope="module")
def answerer(tiny_models):
    return build_backend(BackendConfig(name="transformers", model=str(tiny_models["answerer"]),
                                       sampling={"max_tokens": 6}))


def test_images_n4_at_temperature_1_give_4_texts(captioner, media_dir: Path) -> None:
    s = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=1)
    (resp,) = captioner.generate([Request.user(PROMPT, images=[media_dir / "img_0.png"], sampling=s)])
    assert resp.ok, resp.error
    assert len(resp.texts) == 4 and len(resp.completion_tokens) == 4 and len(resp.finish_reasons) == 4
    assert all(0 < n <= 8 for n in resp.completion_tokens)
    assert set(resp.finish_reasons) <= {"stop", "length"}
    assert resp.prompt_tokens > 10 and resp.latency_s > 0
    assert len(set(resp.texts)) > 1  # sampled, not copies


def test_greedy_with_seed_is_reproducible(captioner, media_dir: Path) -> None:
    s = SamplingParams(temperature=0.0, seed=7, max_tokens=8)
    req = Request.user(PROMPT, images=[media_dir / "img_1.png"], sampling=s)
    assert captioner.generate([req])[0].texts == captioner.generate([req])[0].texts
    sampled = SamplingParams(temperature=1.0, seed=7, max_tokens=8)
    req = Request.user(PROMPT, images=[media_dir / "img_1.png"], sampling=sampled)
    assert captioner.generate([req])[0].texts == captioner.generate([req])[0].texts


def test_video_from_a_generated_mp4(captioner, media_dir: Path) -> None:
    clip = load_video(media_dir / "clip.mp4", fps=2.0, max_frames=8)
    (resp, from_path) = captioner.generate(
        [Request.user("Describe this video.", videos=[clip]), Request.user("Describe this video.", videos=[media_dir / "clip.mp4"])]
    )
    assert resp.ok, resp.error
    assert from_path.ok, from_path.error
    assert resp.prompt_tokens > 20 and resp.texts


def test_bad_media_fails_alone_in_a_batch(captioner, media_dir: Path) -> None:
    reqs = [
        Request.user(PROMPT, images=[media_dir / "img_0.png"], id="good-1"),
        Request.user(PROMPT, images=[media_dir / "truncated.jpg"], id="truncated"),
        Request.user(PROMPT, images=[media_dir / "missing.png"], id="missing"),
        Request.user(PROMPT, videos=[media_dir / "corrupt.mp4"], id="corrupt-video"),
        Request.user(PROMPT, images=[media_dir / "img_2.png"], id="good-2"),
    ]
    out = captioner.generate(reqs)
    assert [r.id for r in out] == [r.id for r in reqs]
    kinds = {r.id: r.error_kind for r in out}
    assert kinds == {"good-1": None, "truncated": "failed_to_decode", "missing": "file_not_found",
                     "corrupt-video": "failed_to_decode", "good-2": None}
    assert out[0].texts and out[4].texts


def test_text_model_with_prefill_and_mixed_sampling(answerer) -> None:
    a = Request.user("Question: what color?\n   - A) red\n   - B) blue", prefill="The answer is",
                     sampling=SamplingParams(n=2, temperature=0.6, max_tokens=4))
    b = Request.user("Say something.")
    out = answerer.generate([a, b])
    assert len(out[0].texts) == 2 and len(out[1].texts) == 1
    assert all(n <= 4 for n in out[0].completion_tokens)
    # the prefill is part of the prompt: more prompt tokens than the same request without it
    no_prefill = answerer.generate([Request.user(a.messages[0]["content"], sampling=a.sampling)])[0]
    assert out[0].prompt_tokens > no_prefill.prompt_tokens


def test_text_model_given_images_is_the_wrong_model(answerer, media_dir: Path) -> None:
    # not one bad request: every media request would fail, so the back end fails as a whole, naming the model
    with pytest.raises(BackendError, match=r"is a text-only model \(Qwen2ForCausalLM\); a captioner needs"):
        answerer.generate([Request.user("x", images=[media_dir / "img_0.png"])])


def test_stop_strings_cut_the_text(answerer) -> None:
    s = SamplingParams(n=1, temperature=1.0, seed=11, max_tokens=12)  # seeded: the same text twice
    free = answerer.generate([Request.user("Say something.", sampling=s)])[0].texts[0]
    assert len(free.strip()) >= 2, free
    stop = free.strip()[-2:]
    cut = answerer.generate([Request.user("Say something.", sampling=s.with_(stop=(stop,)))])[0]
    assert cut.texts[0] == free[: free.find(stop)]
    assert cut.finish_reasons == ["stop"]


def test_streaming_answers_every_request_by_id(answerer) -> None:
    reqs = [Request.user(f"Item {i}", id=str(i), sampling=SamplingParams(max_tokens=2)) for i in range(7)]
    ids = [r.id for r in answerer.stream(iter(reqs))]
    assert sorted(ids, key=int) == [str(i) for i in range(7)]


def test_trust_remote_code_is_off_by_default() -> None:
    assert BackendConfig(name="transformers", model="x").trust_remote_code is False
