"""vLLM for real, in the separate vLLM CPU environment: the offline ``vllm`` back end, and the ``openai`` back end
against ``vllm serve`` on 127.0.0.1 — tiny text answerer and tiny VLM captioner with images and video."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Request, SamplingParams
from caprl_kit.backends.config import BackendConfig
from caprl_kit.io.media import load_video
from vllm_server import VLLMServer, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
HELPERS = Path(__file__).resolve().parents[1] / "helpers"


@pytest.fixture(scope="module")
def vllm_exe() -> Path:
    exe = vllm_python()
    if not exe.exists():
        pytest.fail(f"the vLLM environment is missing ({exe}); build it with: bash envs/setup_vllm.sh")
    return exe


def test_offline_vllm_backend(vllm_exe: Path, tiny_models, media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "offline.json"
    proc = subprocess.run(
        [str(vllm_exe), str(HELPERS / "vllm_offline_check.py"), str(tiny_models["captioner"]),
         str(tiny_models["answerer"]), str(media_dir), str(out)],
        capture_output=True, text=True, timeout=540, env={"VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                                                          "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    text = r["text"]
    assert len(text["n4"]["texts"]) == 4 and len(text["n4"]["completion_tokens"]) == 4
    assert text["greedy"][0]["texts"] == text["greedy"][1]["texts"]
    assert text["seeded"][0]["texts"] == text["seeded"][1]["texts"]
    assert text["prefill"]["prompt_tokens"] > text["greedy"][0]["prompt_tokens"]
    stream = r["stream"]
    for run in ("streamed", "fed"):  # every request answered exactly once, by its id, within its own max_tokens
        assert sorted(x["id"] for x in stream[run]) == sorted(stream["max_tokens"])
        assert all(x["error"] is None and x["completion_tokens"][0] <= stream["max_tokens"][x["id"]]
                   for x in stream[run])
    by_id = {x["id"]: x["texts"] for x in stream["streamed"]}
    assert all(by_id[x["id"]] == x["texts"] for x in stream["fed"])  # greedy: the same answers either way
    assert stream["feed_peak"] >= 5  # the first burst was inside the engine together
    assert r["dead_engine"].startswith("vLLM's engine died (EngineDeadError") and "rerun" in r["dead_engine"]
    assert r["alive_after"]["error"] is None  # the requests it held were aborted, nothing lingered in the engine
    vlm = r["vlm"]
    assert len(vlm["image_n4"]["texts"]) == 4 and vlm["image_n4"]["error_kind"] is None
    assert vlm["image_n4"]["prompt_tokens"] > 10
    assert vlm["bad_image"]["error_kind"] == "failed_to_decode"
    assert vlm["video"]["error_kind"] is None and vlm["video"]["texts"]
    assert vlm["greedy"][0]["texts"] == vlm["greedy"][1]["texts"]


def test_openai_backend_against_vllm_serve_text(vllm_exe: Path, tiny_models, tmp_path: Path) -> None:
    with VLLMServer(vllm_exe, tiny_models["answerer"], tmp_path / "serve-answerer.log") as server:
        b = build_backend(BackendConfig(name="openai", model="tiny", openai={"base_url": server.base_url,
                                                                             "max_concurrency": 4}))
        q = "Question: what color?\n   - A) red\n   - B) blue"
        greedy = SamplingParams(temperature=0.0, seed=2, max_tokens=6)
        out = b.generate([
            Request.user(q, sampling=SamplingParams(n=4, temperature=1.0, max_tokens=6)),
            Request.user(q, sampling=greedy),
            Request.user(q, sampling=greedy),
            Request.user(q, prefill="The answer is", sampling=greedy),
            Request.user(q, sampling=SamplingParams(max_tokens=100000)),  # over the context: a 400
        ])
    assert len(out[0].texts) == 4, out[0].error
    assert out[1].ok and out[1].texts == out[2].texts
    assert out[3].ok and out[3].prompt_tokens > out[1].prompt_tokens
    assert out[4].error_kind == "bad_request" and "400" in out[4].error


def test_openai_backend_against_vllm_serve_vlm(vllm_exe: Path, tiny_models, media_dir: Path, tmp_path: Path) -> None:
    with VLLMServer(vllm_exe, tiny_models["captioner"], tmp_path / "serve-captioner.log") as server:
        opts = {"base_url": server.base_url, "video_as": "jpeg_sequence"}
        b = build_backend(BackendConfig(name="openai", model="tiny", openai=opts))
        clip = load_video(media_dir / "clip.mp4", fps=2.0, max_frames=8)
        out = b.generate([
            Request.user("Please describe this image in detail.", images=[media_dir / "img_0.png"],
                         sampling=SamplingParams(n=4, temperature=1.0, max_tokens=8)),
            Request.user("Describe this video.", videos=[clip], sampling=SamplingParams(max_tokens=8)),
            Request.user("Describe.", images=[media_dir / "empty.jpg"]),
        ])
    assert len(out[0].texts) == 4 and out[0].prompt_tokens > 10, out[0].error
    assert out[1].ok and out[1].prompt_tokens > 20, out[1].error
    assert out[2].error_kind == "empty_file"
