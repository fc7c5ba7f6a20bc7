"""Captions scored per second by the reward server.

    .venv/bin/python benchmarks/reward_server.py [--captions 128] [--qa-num 8] [--engine transformers|lexical]
    .venv/bin/python benchmarks/reward_server.py --engine gpu-timing [--captions 4096] [--clients 32] [--batch 4]

transformers / lexical: the same real server over HTTP on 127.0.0.1 with the tiny Qwen2 answerer (or the lexical
one), two client patterns side by side:
- batched: the verl adapter's pattern: requests of ``--batch`` captions sent concurrently;
- one-per-caption: one caption per request, sent one after another (the naive client).

gpu-timing: what a GPU answerer behind ``vllm serve`` would see. The answerer is the ``openai`` back end talking to
``gpu_timing_server.py`` (a MEASURING INSTRUMENT that emulates a GPU engine's continuous-batching decode timing,
see its docstring; answer lengths from a seeded lognormal, median 4 tokens, capped by the reward's 10 max_tokens).
``--clients`` closed-loop clients each send requests of ``--batch`` captions until ``--captions`` are scored,
as verl's reward workers do. Printed: captions/s, the instrument's slot occupancy and throughput against its
capacity, request latency p50/p90.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from uvicorn_thread import serve  # noqa: E402

QUESTIONS = [
    "What color is the circle?\n   - A) red\n   - B) blue\n   - C) green\n   - D) yellow",
    "Where is the square?\n   - A) left\n   - B) right\n   - C) top\n   - D) bottom",
]


def body(captions: list[str]) -> dict:
    return {"prompts": [[c, [[QUESTIONS[0], "A"], [QUESTIONS[1], "B"]]] for c in captions], "query": [], "labels": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32, help="captions per request in batched mode")
    ap.add_argument("--qa-num", type=int, default=8)
    ap.add_argument("--engine", default="transformers", choices=["transformers", "lexical", "gpu-timing"])
    ap.add_argument("--clients", type=int, default=32, help="gpu-timing: concurrent closed-loop clients")
    ap.add_argument("--max-running", type=int, default=64, help="gpu-timing: the instrument's slots")
    ap.add_argument("--step-s", type=float, default=0.01, help="gpu-timing: seconds per decode step")
    args = ap.parse_args()
    if args.engine == "gpu-timing":
        return gpu_timing(args)

    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.rewards.server import RewardServerConfig, create_app

    answerer = {"name": "lexical"}
    if args.engine == "transformers":
        model = build_tiny_models(Path(tempfile.mkdtemp(prefix="caprl-bench-rm-")))["answerer"]
        answerer = {"name": "transformers", "model": str(model), "batch_size": 256}
    cfg = RewardServerConfig.model_validate({"qa": {"qa_num": args.qa_num, "seed": 0, "answerer": answerer}})
    captions = [f"A red circle at the left and a blue square at the right, number {i}." for i in range(args.captions)]
    app = create_app(cfg)
    with serve(app) as url:
        httpx.post(f"{url}/get_reward", json=body(captions[:4]), timeout=600)  # warm-up

        async def batched() -> float:
            async with httpx.AsyncClient(timeout=600) as client:
                t0 = time.perf_counter()
                chunks = [captions[i : i + args.batch] for i in range(0, len(captions), args.batch)]
                rs = await asyncio.gather(*(client.post(f"{url}/get_reward", json=body(c)) for c in chunks))
                assert all(r.status_code == 200 for r in rs)
                return time.perf_counter() - t0

        batched_s = asyncio.run(batched())
        with httpx.Client(timeout=600) as client:
            t0 = time.perf_counter()
            for c in captions:
                assert client.post(f"{url}/get_reward", json=body([c])).status_code == 200
            single_s = time.perf_counter() - t0
        peak = app.state.scorer.feed.peak
    n = len(captions)
    result = {"captions": n, "qa_num": args.qa_num, "engine": args.engine,
              "batched_captions_per_s": n / batched_s, "one_per_caption_captions_per_s": n / single_s,
              "ratio": single_s / batched_s, "peak_prompts_in_engine": peak,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"{n} captions x {args.qa_num} questions, answerer: {args.engine}")
    print(f"batched ({args.batch}/request, concurrent)  {result['batched_captions_per_s']:8.1f} captions/s")
    print(f"one request per caption, sequential   {result['one_per_caption_captions_per_s']:8.1f} captions/s")
    print(f"ratio batched / one-per-caption: {result['ratio']:.1f}x   peak RSS {result['peak_rss_mb']:.0f} MB")
    print(json.dumps(result))


def gpu_timing(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_timing_server import EngineConfig, serve_process

    from caprl_kit.rewards.server import RewardServerConfig, create_app

    engine = EngineConfig(max_running=args.max_running, step_s=args.step_s, prefill_steps=1, median_tokens=4,
                          sigma=0.6, max_len=10, seed=0)
    captions = [f"A red circle at the left and a blue square at the right, take {i}." for i in range(args.captions)]
    chunks = [captions[i : i + args.batch] for i in range(0, len(captions), args.batch)]
    with serve_process(engine) as engine_url:
        answerer = {"name": "openai", "model": "gpu-timing",
                    "openai": {"base_url": engine_url, "max_concurrency": 2 * args.max_running}}
        app = create_app(RewardServerConfig.model_validate({"qa": {"qa_num": args.qa_num, "seed": 0,
                                                                  "answerer": answerer}}))
        stats_url = engine_url.rsplit("/v1", 1)[0]
        with serve(app) as url:
            httpx.post(f"{url}/get_reward", json=body(captions[:2]), timeout=600)  # warm-up
            httpx.post(f"{stats_url}/reset")
            latencies: list[float] = []

            async def run() -> float:
                todo = iter(chunks)
                async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=args.clients)) as c:
                    async def client() -> None:
                        for chunk in todo:
                            t = time.perf_counter()
                            r = await c.post(f"{url}/get_reward", json=body(chunk))
                            assert r.status_code == 200, r.text
                            latencies.append(time.perf_counter() - t)

                    t0 = time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(args.clients)))
                    return time.perf_counter() - t0

            wall = asyncio.run(run())
            stats = httpx.get(f"{stats_url}/stats").json()
    latencies.sort()
    n = len(captions)
    result = {"engine": "gpu-timing (measuring instrument)", "captions": n, "qa_num": args.qa_num,
              "clients": args.clients, "captions_per_request": args.batch, "captions_per_s": n / wall,
              "latency_p50_s": latencies[len(latencies) // 2], "latency_p90_s": latencies[int(len(latencies) * 0.9)],
              "instrument": {k: stats.get(k) for k in ("occupancy", "occupancy_while_queued", "ratio_to_capacity",
                                                        "tail_lost_share", "steps", "engine_lag_s")}}
    print(f"{n} captions x {args.qa_num} answer prompts, {args.clients} clients x {args.batch} captions/request, "
          f"answerer: GPU-timing instrument ({args.max_running} slots, {args.step_s * 1000:.0f} ms/step)")
    print(f"captions/s {result['captions_per_s']:.1f}   request latency p50 {result['latency_p50_s']:.2f} s, "
          f"p90 {result['latency_p90_s']:.2f} s   engine occupancy {stats.get('occupancy', 0):.3f}, "
          f"throughput {stats.get('ratio_to_capacity', 0):.3f}x of capacity")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
