"""Captions scored per second by the reward server: batched vs one request per caption, side by side in one run.

    .venv/bin/python benchmarks/reward_server.py [--captions 128] [--qa-num 8] [--engine transformers|lexical]

Both modes hit the same real server over HTTP on 127.0.0.1 with the tiny Qwen2 answerer (transformers back end):
- batched: the verl adapter's pattern — requests of ``--batch`` captions sent concurrently; the server coalesces
  them into shared engine calls;
- one-per-caption: one caption per request, sent one after another (the naive client).
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
    ap.add_argument("--engine", default="transformers", choices=["transformers", "lexical"])
    args = ap.parse_args()

    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.rewards.server import RewardServerConfig, create_app

    answerer = {"name": "lexical"}
    if args.engine == "transformers":
        model = build_tiny_models(Path(tempfile.mkdtemp(prefix="caprl-bench-rm-")))["answerer"]
        answerer = {"name": "transformers", "model": str(model), "batch_size": 256}
    cfg = RewardServerConfig.model_validate({"qa": {"qa_num": args.qa_num, "seed": 0, "answerer": answerer},
                                             "batch_wait_ms": 10, "max_batch_captions": 256})
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
        calls = list(app.state.scorer.scored_batches)
    n = len(captions)
    result = {"captions": n, "qa_num": args.qa_num, "engine": args.engine,
              "batched_captions_per_s": n / batched_s, "one_per_caption_captions_per_s": n / single_s,
              "ratio": single_s / batched_s, "engine_calls": len(calls),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"{n} captions x {args.qa_num} questions, answerer: {args.engine}")
    print(f"batched ({args.batch}/request, concurrent)  {result['batched_captions_per_s']:8.1f} captions/s")
    print(f"one request per caption, sequential   {result['one_per_caption_captions_per_s']:8.1f} captions/s")
    print(f"ratio batched / one-per-caption: {result['ratio']:.1f}x   peak RSS {result['peak_rss_mb']:.0f} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
