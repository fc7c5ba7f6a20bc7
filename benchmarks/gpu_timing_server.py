"""MEASURING INSTRUMENT, not an inference engine: a loopback OpenAI-compatible chat server that emulates the *timing*
of a GPU decode engine (continuous batching), so the openai back end's scheduling can be measured on a CPU box.

A CPU cannot produce GPU timing, so nothing here runs a model. The emulated engine is one asyncio loop with
``max_running`` slots:

- a request (each of its ``n`` choices is one sequence) waits in a FIFO queue until a slot is free;
- queued sequences are admitted at the start of a step (like vLLM's scheduler), then every ``step_s`` seconds every
  running sequence gets one more token, however many run (decode on a GPU is memory-bound: a step costs the same
  for 1 or ``max_running`` sequences); admission costs ``prefill_steps`` extra steps per sequence;
- a sequence finishes after its length in tokens (or the request's ``max_tokens``: ``finish_reason: length``);
  its length comes from a lognormal (``median_tokens``, ``sigma``, capped at ``max_len``) seeded by a hash of the
  request's messages (text and image data URLs, which are never decoded) and ``seed``: the same item always gets
  the same length, whatever order it arrives in.

Capacity (the throughput with all ``max_running`` slots always busy) = max_running / ((mean_len + prefill) * step_s)
items/s. ``GET /stats`` reports, between the first arrival and the last completion: the measured slot occupancy
(busy slot-steps / (max_running x steps), an idle engine counting the steps it would have run as empty), the
occupancy while requests were queued, the refill gap (a freed slot that nobody waited for -> the client's next
request: the client's latency in a closed loop), the tail (the steps after the last admission, when fewer than
max_running requests remain), completions per step against capacity per step, the lengths assigned (admission order) and the
wall-clock figures with the engine's own lag (the instrument runs late when its CPU is busy; per-step figures leave
that lag out). ``POST /reset`` starts a new measurement.

    .venv/bin/python benchmarks/gpu_timing_server.py --max-running 64 --step-s 0.01 --median-tokens 45
    # prints "READY http://127.0.0.1:PORT/v1" once it accepts requests

In Python: ``with serve_thread(...) as url`` (tests) or ``with serve_process(...) as url`` (benchmarks: its own
process, so the client's CPU work cannot delay the emulated engine's clock).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from starlette.requests import Request  # resolved by FastAPI from this module's globals (postponed annotations)

BANNER = ("MEASURING INSTRUMENT: emulates a GPU engine's decode timing (continuous batching), it runs no model and "
          "its texts are filler")


@dataclass
class EngineConfig:
    max_running: int = 64
    step_s: float = 0.01
    prefill_steps: int = 1
    median_tokens: float = 45.0  # CapRL-like: 450 with step ~0.02-0.03 s on a real GPU; scaled down for a short run
    sigma: float = 0.6
    max_len: int = 2048
    seed: int = 0

    @property
    def mean_len(self) -> float:
        """Expected length of the (uncapped) lognormal."""
        return self.median_tokens * math.exp(self.sigma**2 / 2)

    def length_of(self, key: bytes, choice: int = 0) -> int:
        h = hashlib.sha256(b"%d:%d:" % (self.seed, choice) + key).digest()
        rng = random.Random(int.from_bytes(h[:8], "big"))
        return max(1, min(self.max_len, round(rng.lognormvariate(math.log(self.median_tokens), self.sigma))))


@dataclass
class _Seq:
    length: int
    left: int
    done: asyncio.Future


@dataclass
class _Stats:
    first_arrival: float | None = None
    last_done: float | None = None
    last_admit: float | None = None
    completed: int = 0
    steps: list[tuple[float, int, bool]] = field(default_factory=list)  # (end time, busy slots, queue non-empty)
    lengths: list[int] = field(default_factory=list)  # tokens + prefill per sequence, in admission order
    lag_s: float = 0.0  # time the engine's steps ran behind its clock (the instrument itself overloaded)
    max_waiting: int = 0
    free_since: deque = field(default_factory=deque)  # when each slot that nobody waited for was freed
    refill_gaps: list[float] = field(default_factory=list)  # slot freed -> next request arrived (client latency)
    arrivals: list[str] = field(default_factory=list)  # each request's prompt_key, in arrival order


class Engine:
    """The emulated continuous-batching engine; runs on the server's event loop."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self.stats = _Stats()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    def reset(self) -> None:
        self.stats = _Stats()

    async def submit(self, lengths: list[int]) -> list[_Seq]:
        loop = asyncio.get_running_loop()
        if self.stats.first_arrival is None:
            self.stats.first_arrival = time.perf_counter()
        now = time.perf_counter()
        for _ in lengths:
            if self.stats.free_since and len(self.running) + len(self.waiting) < self.cfg.max_running:
                self.stats.refill_gaps.append(now - self.stats.free_since.popleft())
        seqs = [_Seq(n, n + self.cfg.prefill_steps, loop.create_future()) for n in lengths]
        self.waiting.extend(seqs)
        self.stats.max_waiting = max(self.stats.max_waiting, len(self.waiting))
        assert self._wake is not None
        self._wake.set()
        await asyncio.gather(*(s.done for s in seqs))
        return seqs

    async def _loop(self) -> None:
        cfg, loop = self.cfg, asyncio.get_running_loop()
        assert self._wake is not None
        next_t = loop.time()
        while True:
            # admission at the start of a step
            while self.waiting and len(self.running) < cfg.max_running:
                seq = self.waiting.popleft()
                self.running.append(seq)
                self.stats.lengths.append(seq.left)
                self.stats.last_admit = time.perf_counter()
            if not self.running:  # idle: the next arrival starts a step at once
                self._wake.clear()
                idle_since = loop.time()
                await self._wake.wait()
                next_t = loop.time()
                if self.stats.steps:  # idle inside a measurement: the steps the engine would have run, all empty
                    now = time.perf_counter()
                    self.stats.steps += [(now, 0, False)] * int((next_t - idle_since) / cfg.step_s)
                continue
            queued = bool(self.waiting)
            next_t += cfg.step_s
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # behind the clock: no catch-up burst, the step simply ends late (and the lag is reported)
                self.stats.lag_s -= delay
                next_t = loop.time()
                await asyncio.sleep(0)
            now = time.perf_counter()
            busy = len(self.running)
            self.stats.steps.append((now, busy, queued))
            still = []
            for seq in self.running:
                seq.left -= 1
                if seq.left > 0:
                    still.append(seq)
                else:
                    if not seq.done.done():  # (a cancelled request's future is done already)
                        seq.done.set_result(None)
                    if not self.waiting:  # a slot that stays empty until the client sends another request
                        self.stats.free_since.append(now)
            self.stats.completed += busy - len(still)
            if len(still) < busy:
                self.stats.last_done = now
            self.running = still

    def report(self) -> dict[str, Any]:
        cfg, st = self.cfg, self.stats
        out: dict[str, Any] = {
            "instrument": BANNER,
            "config": cfg.__dict__ | {"mean_len_expected": cfg.mean_len},
            "capacity_items_per_s_expected": cfg.max_running / ((cfg.mean_len + cfg.prefill_steps) * cfg.step_s),
            "completed_sequences": st.completed,
            "running": len(self.running),
            "waiting": len(self.waiting),
            "max_waiting": st.max_waiting,
            "engine_lag_s": round(st.lag_s, 4),
            "steps": len(st.steps),
            "lengths": st.lengths,
            "arrivals": st.arrivals,
        }
        if st.first_arrival is None or st.last_done is None or not st.steps:
            return out
        R, n_steps = cfg.max_running, len(st.steps)
        window = st.last_done - st.first_arrival
        busy = sum(b for _, b, _ in st.steps)
        q_steps = [b for _, b, q in st.steps if q]
        tail = [b for t, b, _ in st.steps if st.last_admit is not None and t > st.last_admit]
        mean_len = sum(st.lengths) / len(st.lengths)  # steps per sequence: tokens + prefill, as admitted
        out.update({
            # per step of the emulated engine (its own lag left out: the instrument runs late when the CPU is busy)
            "busy_slot_steps": busy,
            "peak_running": max(b for _, b, _ in st.steps),
            "occupancy": busy / (R * n_steps),
            "occupancy_while_queued": (sum(q_steps) / (R * len(q_steps))) if q_steps else None,
            "queued_steps": len(q_steps),
            "tail_steps": len(tail),
            "tail_lost_share": (R * len(tail) - sum(tail)) / (R * n_steps),
            "occupancy_before_tail": (busy - sum(tail)) / (R * (n_steps - len(tail))) if n_steps > len(tail)
            else None,
            "mean_len_observed": mean_len,
            "capacity_items_per_step": R / mean_len,
            "items_per_step": st.completed / n_steps,
            "ratio_to_capacity": (st.completed / n_steps) / (R / mean_len),
            # wall clock
            "window_s": window,
            "effective_step_s": window / n_steps,
            "tail_s": (st.last_done - st.last_admit) if st.last_admit else 0.0,
            "items_per_s": st.completed / window if window else 0.0,
            "capacity_items_per_s": R / (mean_len * cfg.step_s),  # at the nominal step time
        })
        if st.refill_gaps:  # closed loop (max_concurrency <= max_running): how long a freed slot waited for work
            gaps = sorted(st.refill_gaps)
            out["refill_gap_ms"] = {"n": len(gaps), "mean": 1000 * sum(gaps) / len(gaps),
                                    "p50": 1000 * gaps[len(gaps) // 2], "p90": 1000 * gaps[int(len(gaps) * 0.9)],
                                    "max": 1000 * gaps[-1]}
        return out


def _messages_key(body: dict[str, Any]) -> bytes:
    return json.dumps(body.get("messages"), sort_keys=True, separators=(",", ":")).encode()


def lengths_for(cfg: EngineConfig, body: dict[str, Any], key: bytes | None = None) -> list[int]:
    """The seeded length of each choice of a chat request (from its messages only; ``key``: ``_messages_key(body)``
    when the caller has it)."""
    key = key if key is not None else _messages_key(body)
    return [cfg.length_of(key, i) for i in range(int(body.get("n") or 1))]


def prompt_key(body: dict[str, Any], key: bytes | None = None) -> str:
    """A short digest of a chat request's messages: ``/stats`` lists them in arrival order (``arrivals``), so a test
    can see which prompts reached the engine one after another."""
    return hashlib.sha256(key if key is not None else _messages_key(body)).hexdigest()[:16]


def make_app(cfg: EngineConfig) -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    engine = Engine(cfg)

    @asynccontextmanager
    async def lifespan(_: Any):
        engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="gpu-timing-server (measuring instrument)", lifespan=lifespan)
    app.state.engine = engine

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return JSONResponse({"error": {"message": "messages must be a non-empty list"}}, status_code=400)
        key = _messages_key(body)  # once per request: with photos in it, a message list is ~0.3 MB of JSON
        engine.stats.arrivals.append(prompt_key(body, key))
        max_tokens = int(body.get("max_tokens") or cfg.max_len)
        wanted = lengths_for(cfg, body, key)
        lengths = [min(n, max_tokens) for n in wanted]
        await engine.submit(lengths)
        choices = [{"index": i, "message": {"role": "assistant", "content": " ".join(["tok"] * n)},
                    "finish_reason": "length" if w > max_tokens else "stop"}
                   for i, (n, w) in enumerate(zip(lengths, wanted))]
        prompt = sum(len(p.get("text", "")) // 4 + (256 if p.get("type") == "image_url" else 0)
                     for m in messages for p in (m["content"] if isinstance(m.get("content"), list)
                                                 else [{"text": m.get("content") or ""}]))
        return {"id": f"cmpl-{id(body):x}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "gpu-timing"), "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": sum(lengths),
                          "total_tokens": prompt + sum(lengths)}}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": "gpu-timing", "object": "model"}]}

    @app.get("/stats")
    async def stats() -> Any:
        return engine.report()

    @app.post("/reset")
    async def reset() -> Any:
        if engine.running or engine.waiting:
            return JSONResponse({"error": {"message": "busy: requests are still in the engine"}}, status_code=409)
        engine.reset()
        return {"reset": True}

    return app


def _server(cfg: EngineConfig) -> Any:
    import uvicorn

    config = uvicorn.Config(make_app(cfg), log_level="warning", lifespan="on", backlog=4096)
    return uvicorn.Server(config)


def _bind(port: int = 0) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and a plain socket() says
    # 0; with Nagle on, a response written in two parts waits for the client's delayed ACK (~40 ms on Linux)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def serve_thread(cfg: EngineConfig) -> Iterator[str]:
    """The server on a background thread of this process (tests); yields the base URL ending in /v1."""
    sock = _bind()
    server = _server(cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("gpu_timing_server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_process(cfg: EngineConfig) -> Iterator[str]:
    """The server in its own Python process (benchmarks); yields the base URL ending in /v1."""
    args = [sys.executable, os.path.abspath(__file__), "--max-running", str(cfg.max_running), "--step-s",
            str(cfg.step_s), "--prefill-steps", str(cfg.prefill_steps), "--median-tokens", str(cfg.median_tokens),
            "--sigma", str(cfg.sigma), "--max-len", str(cfg.max_len), "--seed", str(cfg.seed)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY "):
                url = line.split()[1]
                break
        else:
            raise RuntimeError(f"gpu_timing_server exited with {proc.wait()} before it was ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = EngineConfig()
    ap.add_argument("--max-running", type=int, default=d.max_running, help="slots (continuous batch size)")
    ap.add_argument("--step-s", type=float, default=d.step_s, help="seconds per decode step")
    ap.add_argument("--prefill-steps", type=int, default=d.prefill_steps, help="extra steps per admitted sequence")
    ap.add_argument("--median-tokens", type=float, default=d.median_tokens, help="lognormal median length")
    ap.add_argument("--sigma", type=float, default=d.sigma, help="lognormal sigma")
    ap.add_argument("--max-len", type=int, default=d.max_len, help="longest completion")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    a = ap.parse_args()
    cfg = EngineConfig(a.max_running, a.step_s, a.prefill_steps, a.median_tokens, a.sigma, a.max_len, a.seed)
    sock = _bind(a.port)
    server = _server(cfg)
    cap = cfg.max_running / ((cfg.mean_len + cfg.prefill_steps) * cfg.step_s)
    print(f"gpu_timing_server: {BANNER}; max_running={cfg.max_running} step_s={cfg.step_s} "
          f"prefill_steps={cfg.prefill_steps} lengths~lognormal(median={cfg.median_tokens}, sigma={cfg.sigma}, "
          f"cap={cfg.max_len}) seed={cfg.seed}; expected capacity {cap:.1f} items/s", file=sys.stderr, flush=True)

    async def ready() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"READY http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)

    async def both() -> None:
        await asyncio.gather(server.serve(sockets=[sock]), ready())

    asyncio.run(both())


if __name__ == "__main__":
    main()
