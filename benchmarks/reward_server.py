"""Captions scored per second by the reward server.

    .venv/bin/python benchmarks/reward_server.py --engine gpu-timing                 # the documented 0.5 s steps
    .venv/bin/python benchmarks/reward_server.py --engine gpu-timing --preset fast   # 10 ms steps, ~360 prompts/s
    .venv/bin/python benchmarks/reward_server.py --engine gpu-timing --preset fast --workers 2
    .venv/bin/python benchmarks/reward_server.py [--captions 128] [--qa-num 8] [--engine transformers|lexical]

gpu-timing: what a GPU answerer behind ``vllm serve`` would see. ``caprl serve-reward`` runs in its own process
(``--workers N``: uvicorn's N worker processes), its answerer the ``openai`` back end talking to
``gpu_timing_server.py`` (a MEASURING INSTRUMENT that emulates a GPU engine's continuous-batching decode timing, see
its docstring; answer lengths from a seeded lognormal, median 4 tokens, capped by the reward's 10 max_tokens).
``--clients`` closed-loop clients each send requests of ``--batch`` captions until ``--captions`` are scored, as
verl's reward workers do. Presets: ``doc`` (the default: the settings the docs quote, 64 slots x 0.5 s steps, 128
captions, 16 clients x 4 captions) and ``fast`` (20 slots x 10 ms steps, 1024 captions); a flag given explicitly
overrides its preset value. Printed: captions/s and answer prompts/s; the instrument's throughput against its
capacity per emulated step (its own lag left out) and in wall-clock time; the server's CPU time per answer prompt
(user + system of the server process and its workers, over the measured phase: HTTP, JSON, validation, prompt
building, the engine client); request latency p50/p90.

transformers / lexical: the same real server over HTTP on 127.0.0.1 (a thread of this process) with the tiny Qwen2
answerer (or the lexical one), two client patterns side by side:
- batched: the verl adapter's pattern: requests of ``--batch`` captions sent concurrently;
- one-per-caption: one caption per request, sent one after another (the naive client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    ap.add_argument("--engine", default="gpu-timing", choices=["gpu-timing", "transformers", "lexical"])
    ap.add_argument("--preset", default="doc", choices=sorted(PRESETS), help="gpu-timing: settings (see above)")
    ap.add_argument("--captions", type=int, help="captions scored (gpu-timing: from the preset; else 128)")
    ap.add_argument("--batch", type=int, help="captions per request (gpu-timing: from the preset; else 32)")
    ap.add_argument("--qa-num", type=int, default=8)
    ap.add_argument("--clients", type=int, help="gpu-timing: concurrent closed-loop clients")
    ap.add_argument("--max-running", type=int, help="gpu-timing: the instrument's slots")
    ap.add_argument("--step-s", type=float, help="gpu-timing: seconds per emulated decode step")
    ap.add_argument("--workers", type=int, default=1, help="gpu-timing: caprl serve-reward --workers")
    args = ap.parse_args()
    if args.engine == "gpu-timing":
        for key, value in PRESETS[args.preset].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        gpu_timing(args)
        return
    args.captions = args.captions or 128
    args.batch = args.batch or 32

    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.rewards.server import RewardServerConfig
    from caprl_kit.rewards.server_app import create_app

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
        peak = app.state.scorer.meter.peak
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


PRESETS = {
    # the settings docs/rewards.md and docs/dataflow.md quote: a slow engine, 0.5 s per decode step (~22 prompts/s)
    "doc": {"captions": 128, "clients": 16, "batch": 4, "max_running": 64, "step_s": 0.5},
    # a fast engine: 10 ms steps, 20 slots: ~360 answer prompts/s of capacity (reward answers are ~5 tokens long)
    "fast": {"captions": 1024, "clients": 16, "batch": 4, "max_running": 20, "step_s": 0.01},
}


def server_config(args: argparse.Namespace, engine_url: str) -> dict:
    answerer = {"name": "openai", "model": "gpu-timing",
                "openai": {"base_url": engine_url, "max_concurrency": 2 * args.max_running}}
    return {"kind": "serve_reward", "qa": {"qa_num": args.qa_num, "seed": 0, "answerer": answerer}}


@contextmanager
def serve_reward_process(cfg: dict, workers: int) -> Iterator[tuple[str, Any]]:
    """``caprl serve-reward`` in its own process (with ``--workers N``: uvicorn's N worker processes under it) on a
    free 127.0.0.1 port; yields its URL and its psutil.Process."""
    import psutil

    folder = Path(tempfile.mkdtemp(prefix="caprl-bench-rs-"))
    (folder / "serve.yaml").write_text(json.dumps(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "caprl_kit", "serve-reward", "--config", str(folder / "serve.yaml"),
           "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"caprl serve-reward exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("caprl serve-reward did not start within 120 s")
            time.sleep(0.1)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_s(proc: Any) -> float:
    """CPU seconds (user + system) of a process and every live process under it (uvicorn's workers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except Exception:  # noqa: BLE001 - a child that just exited
            continue
        total += t.user + t.system
    return total


def gpu_timing(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_timing_server import EngineConfig, serve_process

    engine = EngineConfig(max_running=args.max_running, step_s=args.step_s, prefill_steps=1, median_tokens=4,
                          sigma=0.6, max_len=10, seed=0)
    captions = [f"A red circle at the left and a blue square at the right, take {i}." for i in range(args.captions)]
    chunks = [captions[i : i + args.batch] for i in range(0, len(captions), args.batch)]
    with serve_process(engine) as engine_url:
        stats_url = engine_url.rsplit("/v1", 1)[0]
        with serve_reward_process(server_config(args, engine_url), args.workers) as (url, server):
            warm = [captions[i : i + 2] for i in range(0, 2 * max(4, 2 * args.workers), 2)]

            async def warm_up() -> None:  # every worker answers at least once before the measurement
                async with httpx.AsyncClient(timeout=600) as c:
                    rs = await asyncio.gather(*(c.post(f"{url}/get_reward", json=body(w)) for w in warm))
                    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]

            asyncio.run(warm_up())
            httpx.post(f"{stats_url}/reset")
            latencies: list[float] = []

            async def run() -> tuple[float, float]:
                todo = iter(chunks)
                async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=args.clients)) as c:
                    async def client() -> None:
                        for chunk in todo:
                            t = time.perf_counter()
                            r = await c.post(f"{url}/get_reward", json=body(chunk))
                            assert r.status_code == 200, r.text
                            latencies.append(time.perf_counter() - t)

                    cpu0, t0 = cpu_s(server), time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(args.clients)))
                    return time.perf_counter() - t0, cpu_s(server) - cpu0

            wall, server_cpu = asyncio.run(run())
            stats = httpx.get(f"{stats_url}/stats").json()
    latencies.sort()
    n = len(captions)
    prompts = n * args.qa_num
    wall_ratio = stats["items_per_s"] / stats["capacity_items_per_s"] if stats.get("capacity_items_per_s") else None
    result = {"engine": "gpu-timing (measuring instrument)", "captions": n, "qa_num": args.qa_num,
              "answer_prompts": prompts, "clients": args.clients, "captions_per_request": args.batch,
              "workers": args.workers, "slots": args.max_running, "step_s": args.step_s,
              "captions_per_s": n / wall, "prompts_per_s": prompts / wall,
              "capacity_prompts_per_s": stats.get("capacity_items_per_s"),
              "ratio_to_capacity": stats.get("ratio_to_capacity"), "wall_ratio": wall_ratio,
              "server_cpu_ms_per_prompt": 1000 * server_cpu / prompts, "server_cpu_s": server_cpu, "wall_s": wall,
              "latency_p50_s": latencies[len(latencies) // 2], "latency_p90_s": latencies[int(len(latencies) * 0.9)],
              "instrument": {k: stats.get(k) for k in ("occupancy", "occupancy_while_queued", "occupancy_before_tail",
                                                        "tail_lost_share", "steps", "engine_lag_s")}}
    print(f"{n} captions x {args.qa_num} answer prompts, {args.clients} clients x {args.batch} captions/request, "
          f"{args.workers} server worker(s); answerer: the GPU-timing MEASURING INSTRUMENT ({args.max_running} slots, "
          f"{args.step_s * 1000:g} ms/step, {result['capacity_prompts_per_s'] or 0:.0f} prompts/s of capacity)")
    print(f"captions/s {result['captions_per_s']:.1f} ({result['prompts_per_s']:.0f} prompts/s)   "
          f"ratio to capacity {result['ratio_to_capacity'] or 0:.3f} per step, {wall_ratio or 0:.3f} wall   "
          f"server CPU {result['server_cpu_ms_per_prompt']:.2f} ms per answer prompt")
    print(f"request latency p50 {result['latency_p50_s']:.2f} s, p90 {result['latency_p90_s']:.2f} s   "
          f"engine occupancy {stats.get('occupancy', 0):.3f}, instrument lag {stats.get('engine_lag_s', 0):.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
