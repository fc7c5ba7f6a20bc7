"""Client for one or several reward-server replicas: round-robin, failover on connection errors/5xx/timeouts.

4xx answers are the caller's fault and are raised at once (``RewardError`` with the server's message); when
every replica fails, ``RewardError`` says why for each. One client holds one pool of keep-alive connections
(``httpx.Client``, shared by the threads that post and by ``apost`` on any event loop), closed with the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from caprl_kit.rewards.base import RewardError

#: connections (and ``apost`` threads) one client keeps at most
MAX_CONNECTIONS = 64
#: seconds an idle connection is kept: under uvicorn's 5 s, so the client drops it before the server does
KEEPALIVE_S = 4.0


class RewardUnavailable(RewardError):
    """No reward server answered (connection errors, 5xx, timeouts on every replica): not the request's fault."""


class RewardClient:
    """The replicas' client: one connection pool for every call, until ``close``."""

    def __init__(self, urls: Sequence[str] | str, token: str | None = None, timeout_s: float = 1800.0):
        import httpx

        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        if not urls:
            raise RewardError("no reward server URLs given")
        self.urls = [u.rstrip("/") for u in urls]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self._next = itertools.cycle(range(len(self.urls)))
        self._lock = threading.Lock()
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_S
        )
        self.http = httpx.Client(
            timeout=timeout_s, limits=limits, headers={**self.headers, "Content-Type": "application/json"}
        )
        self._threads = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="caprl-reward")  # apost's posts
        self._closer = weakref.finalize(self, _close, self.http, self._threads)

    def close(self) -> None:
        """Close the pool's connections; the client cannot post afterwards."""
        self._closer()

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _order(self) -> list[str]:
        with self._lock:
            start = next(self._next)
        return self.urls[start:] + self.urls[:start]

    def _handle(self, url: str, resp: Any, errors: list[str]) -> dict[str, Any] | None:
        if resp.status_code == 200:
            return resp.json()
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        if 400 <= resp.status_code < 500:
            raise RewardError(f"{url}: HTTP {resp.status_code}: {message}")
        errors.append(f"{url}: HTTP {resp.status_code}: {message}")
        return None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` (serialized once) to the first replica that answers; thread-safe. A connection that breaks
        under the request (a pooled one the server closed just then) is retried once on a fresh one before the next
        replica: scoring has no side effects."""
        import httpx

        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        errors: list[str] = []
        for base in self._order():
            for again in (False, True):
                try:
                    resp = self.http.post(base + path, content=content)
                except httpx.HTTPError as exc:
                    errors.append(f"{base}: {type(exc).__name__}: {exc}")
                    broken = isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))
                    if broken and not again:
                        continue
                    break
                if (data := self._handle(base, resp, errors)) is not None:
                    return data
                break
        raise RewardUnavailable("every reward server failed: " + "; ".join(errors))

    async def apost(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``post`` from an event loop (any loop: the call runs on one of the client's threads, on its pool)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.post, path, body)


def _close(http: Any, threads: ThreadPoolExecutor) -> None:
    threads.shutdown(wait=False, cancel_futures=True)
    http.close()


#: a caption's QA details as ``QAScorer.reduce`` writes them and the server's ``/v1/reward`` returns them
QA_DETAILS = ("n_questions", "correct", "predicted", "cannot_answer")


def no_questions() -> dict[str, Any]:
    """The QA details of a caption without questions, as in-process."""
    return {"n_questions": 0, "correct": [], "predicted": [], "cannot_answer": []}


class RemoteQAScorer:
    """``QAScorer.score``'s twin that asks ``caprl serve-reward`` (``POST /v1/reward``): the captions and their
    questions go out in requests of ``max_captions_per_request``, sent concurrently; a failure raises
    ``RewardError`` (after the client's failover), never a silent zero. Each caption's details carry what the
    in-process scorer's do (``qa_reward`` and the ``QA_DETAILS`` keys, as the server reports them) plus the call's
    service latency and throughput (``service_latency_s``, ``service_captions_per_s``). Its client's one
    connection pool serves every call, and is closed with the scorer (``close``, or when it is collected)."""

    def __init__(self, cfg: Any):
        import os

        token = os.environ.get(cfg.token_env) if cfg.token_env else None
        self.cfg = cfg
        self.client = RewardClient(cfg.urls, token=token, timeout_s=cfg.timeout_s)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RemoteQAScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, captions: list[str], qa_lists: list[list[Any]]) -> tuple[list[tuple[float, dict[str, Any]]], float]:
        """(score, QA details) per caption, and the request's seconds."""
        import time

        t0 = time.perf_counter()
        body = {"captions": captions, "ground_truth": [[q.model_dump() for q in qas] for qas in qa_lists]}
        data = self.client.post("/v1/reward", body)
        details = data.get("details") or []
        if len(details) != len(captions):
            raise RewardError(f"the reward server answered {len(details)} results for {len(captions)} captions")
        scored = [
            (float(d.get("qa_rewards", d.get("rewards", 0.0))), {k: d[k] for k in QA_DETAILS if k in d})
            for d in details
        ]
        return scored, time.perf_counter() - t0

    def score(self, captions: Sequence[str], qa_lists: Sequence[list[Any]]) -> Any:
        import time
        from concurrent.futures import ThreadPoolExecutor

        from caprl_kit.rewards.base import RewardOutput

        # a caption with no questions scores 0, as in-process (the server refuses an empty list with a 422)
        asked = [i for i, qas in enumerate(qa_lists) if qas]
        scores = [0.0] * len(captions)
        qa_details = [no_questions() for _ in captions]
        if not asked:
            return RewardOutput(scores, [{"qa_reward": 0.0, **d} for d in qa_details])
        step = self.cfg.max_captions_per_request
        chunks = [
            ([captions[i] for i in asked[k : k + step]], [qa_lists[i] for i in asked[k : k + step]])
            for k in range(0, len(asked), step)
        ]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(16, len(chunks))) as pool:
            results = list(pool.map(lambda c: self._post(*c), chunks))
        wall = time.perf_counter() - t0
        for i, (s, d) in zip(asked, [x for chunk, _ in results for x in chunk]):
            scores[i], qa_details[i] = s, d
        latency = sum(sec for _, sec in results) / len(results)
        rate = len(asked) / wall if wall > 0 else 0.0
        details = [
            {"qa_reward": s, **d, "service_latency_s": latency, "service_captions_per_s": rate}
            for s, d in zip(scores, qa_details)
        ]
        return RewardOutput(scores, details)
