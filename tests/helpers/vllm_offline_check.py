"""Run inside the vLLM environment: exercise caprl-kit's ``vllm`` back end on the tiny models, print JSON.

Usage: python vllm_offline_check.py CAPTIONER_DIR ANSWERER_DIR MEDIA_DIR OUT_JSON
"""

from __future__ import annotations

import json
import sys
import time


def as_dict(r):
    return {"texts": r.texts, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "finish_reasons": r.finish_reasons, "error_kind": r.error_kind, "error": r.error}


def main() -> None:
    captioner, answerer, media, out = sys.argv[1:5]
    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import IDLE, Request, SamplingParams
    from caprl_kit.backends.config import BackendConfig
    from caprl_kit.io.media import load_video

    common = dict(dtype="float32", vllm={"gpu_memory_utilization": 0.2, "enforce_eager": True, "max_model_len": 2048})
    result = {}
    t0 = time.perf_counter()
    with build_backend(BackendConfig(name="vllm", model=answerer, **common)) as text:
        result["answerer_start_s"] = time.perf_counter() - t0
        q = "Question: what color?\n   - A) red\n   - B) blue"
        n4 = SamplingParams(n=4, temperature=1.0, max_tokens=8)
        greedy = SamplingParams(temperature=0.0, seed=5, max_tokens=8)
        seeded = SamplingParams(temperature=1.0, seed=5, max_tokens=8)
        out1 = text.generate([Request.user(q, sampling=n4), Request.user(q, sampling=greedy),
                              Request.user(q, sampling=seeded), Request.user(q, prefill="The answer is", sampling=greedy)])
        out2 = text.generate([Request.user(q, sampling=greedy), Request.user(q, sampling=seeded)])
        result["text"] = {"n4": as_dict(out1[0]), "greedy": [as_dict(out1[1]), as_dict(out2[0])],
                          "seeded": [as_dict(out1[2]), as_dict(out2[1])], "prefill": as_dict(out1[3])}
        # the streaming contract: every response once, by id, as its sequence finishes (add_request + step) ...
        reqs = [Request.user(f"{q} #{i}", id=f"s{i}", sampling=SamplingParams(temperature=0.0, max_tokens=2 + 3 * (i % 4)))
                for i in range(12)]
        streamed = list(text.stream(reqs))
        # ... and from a live source (the reward server's and a worker's feed) that goes quiet in between (IDLE:
        # nothing new, step what the engine holds) and then ends
        held = {"now": 0, "peak": 0}

        def live():
            for part in (reqs[:5], reqs[5:]):
                for r in part:
                    held["now"] += 1
                    held["peak"] = max(held["peak"], held["now"])
                    yield r
                quiet = time.perf_counter()
                while time.perf_counter() - quiet < 1.0:
                    time.sleep(0.01)
                    yield IDLE

        fed = []
        for r in text.stream(live()):
            held["now"] -= 1
            fed.append(as_dict(r) | {"id": r.id})
        result["stream"] = {"streamed": [as_dict(r) | {"id": r.id} for r in streamed], "fed": fed,
                            "max_tokens": {r.id: r.sampling.max_tokens for r in reqs}, "feed_peak": held["peak"]}
        # the engine dying mid-stream (vLLM's own EngineDeadError, raised by a step: a real engine cannot be made to
        # die on demand, killing its process makes vLLM hang): the stream stops with EngineDown instead of answering
        # the requests as failed rows that a shard would commit as done
        from vllm.v1.engine.exceptions import EngineDeadError

        from caprl_kit.errors import EngineDown

        engine, real_step, steps = text.llm.llm_engine, text.llm.llm_engine.step, []

        def dying_step():
            steps.append(1)
            if len(steps) > 2:
                raise EngineDeadError()
            return real_step()

        engine.step = dying_step
        try:
            got = list(text.stream(reqs))
            result["dead_engine"] = f"no error ({len(got)} responses)"
        except EngineDown as exc:
            result["dead_engine"] = str(exc)
        finally:
            engine.step = real_step
        result["alive_after"] = as_dict(text.generate([Request.user(q, sampling=greedy)])[0])
    t0 = time.perf_counter()
    with build_backend(BackendConfig(name="vllm", model=captioner, **common)) as vlm:
        result["captioner_start_s"] = time.perf_counter() - t0
        p = "Please describe this image in detail."
        clip = load_video(f"{media}/clip.mp4", fps=2.0, max_frames=8)
        outs = vlm.generate([
            Request.user(p, images=[f"{media}/img_0.png"], sampling=SamplingParams(n=4, temperature=1.0, max_tokens=8)),
            Request.user(p, images=[f"{media}/truncated.jpg"]),
            Request.user("Describe this video.", videos=[clip], sampling=SamplingParams(max_tokens=8)),
            Request.user(p, images=[f"{media}/img_1.png"], sampling=SamplingParams(temperature=0.0, seed=1, max_tokens=8)),
        ])
        again = vlm.generate([Request.user(p, images=[f"{media}/img_1.png"],
                                           sampling=SamplingParams(temperature=0.0, seed=1, max_tokens=8))])
        result["vlm"] = {"image_n4": as_dict(outs[0]), "bad_image": as_dict(outs[1]), "video": as_dict(outs[2]),
                         "greedy": [as_dict(outs[3]), as_dict(again[0])], "n_frames": len(clip.frames)}
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
