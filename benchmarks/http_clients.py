"""CPU per request of the asyncio HTTP clients the openai back end could use, with max_concurrency requests in flight.

    .venv/bin/python benchmarks/http_clients.py [--n 2000] [--max-concurrency 64 512] [--clients httpx httpx-8 aiohttp]

Each client posts --n pre-serialized chat bodies of about 3 KB (a small image's data URL) to
benchmarks/gpu_timing_server.py (a MEASURING INSTRUMENT in its own process: 512 slots, 2 ms steps, median 20 tokens,
so it answers as fast as it can), keeping --max-concurrency requests in flight on one event loop, and reports this
process's CPU time per request (``time.process_time()``; the server's process is not counted) and requests/s, best
of --repeat. Clients: ``httpx`` (one AsyncClient, a pool of max_concurrency connections: what the back end used
before), ``httpx-K`` (K AsyncClients sharing the requests round-robin, each with a pool of max_concurrency / K),
``aiohttp`` (one ClientSession, a TCPConnector of max_concurrency connections: what it uses now).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}


def bodies(n: int) -> list[bytes]:
    """n distinct chat bodies of ~3 KB: a text part and a 2.2 KB image as a data URL."""
    return [json.dumps({"model": "gpu-timing", "max_tokens": 2048, "messages": [{"role": "user", "content": [
        {"type": "text", "text": f"describe {i}"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(os.urandom(2200))
                                            .decode()}}]}]}).encode() for i in range(n)]


async def with_httpx(url: str, data: list[bytes], limit: int, shards: int) -> None:
    import httpx

    per = max(1, limit // shards)
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per, keepalive_expiry=4.0)
    clients = [httpx.AsyncClient(timeout=600, limits=limits) for _ in range(shards)]
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            resp = await clients[i % shards].post(url, content=data[i], headers=HEADERS)
            return resp.json()

    try:
        await asyncio.gather(*(one(i) for i in range(len(data))))
    finally:
        for c in clients:
            await c.aclose()


async def with_aiohttp(url: str, data: list[bytes], limit: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        sem = asyncio.Semaphore(limit)

        async def one(i: int) -> Any:
            async with sem, session.post(url, data=data[i]) as resp:
                return json.loads(await resp.read())

        await asyncio.gather(*(one(i) for i in range(len(data))))


def main(argv: list[str] | None = None) -> None:
    from gpu_timing_server import BANNER, EngineConfig, serve_process

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="requests per run")
    ap.add_argument("--max-concurrency", type=int, nargs="+", default=[64, 512], help="requests in flight")
    ap.add_argument("--clients", nargs="+", default=["httpx", "httpx-8", "httpx-64", "aiohttp"],
                    help="httpx, httpx-K (K sharded pools), aiohttp")
    ap.add_argument("--repeat", type=int, default=2, help="runs per client and concurrency (the best is kept)")
    args = ap.parse_args(argv)
    data = bodies(args.n)
    print(BANNER)
    print(f"{'client':<10}{'max_concurrency':>16}{'CPU ms/request':>16}{'requests/s':>12}")
    with serve_process(EngineConfig(max_running=512, step_s=0.002, median_tokens=20)) as base:
        url = base + "/chat/completions"
        for limit in args.max_concurrency:
            for client in args.clients:
                best: tuple[float, float] | None = None
                for _ in range(args.repeat):
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    if client == "aiohttp":
                        asyncio.run(with_aiohttp(url, data, limit))
                    else:
                        shards = int(client.split("-")[1]) if "-" in client else 1
                        asyncio.run(with_httpx(url, data, limit, shards))
                    cpu_ms, rate = 1000 * (time.process_time() - cpu0) / args.n, args.n / (time.perf_counter() - t0)
                    best = (cpu_ms, rate) if best is None or cpu_ms < best[0] else best
                assert best is not None
                print(f"{client:<10}{limit:>16}{best[0]:>16.2f}{best[1]:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
