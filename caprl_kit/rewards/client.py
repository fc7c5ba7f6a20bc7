"""Client for one or several reward-server replicas: round-robin, failover on connection errors/5xx/timeouts.

4xx answers are the caller's fault and are raised at once (``RewardError`` with the server's message); when
every replica fails, ``RewardError`` says why for each.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Sequence

from caprl_kit.rewards.base import RewardError


class RewardClient:
    def __init__(self, urls: Sequence[str] | str, token: str | None = None, timeout_s: float = 1800.0):
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        if not urls:
            raise RewardError("no reward server URLs given")
        self.urls = [u.rstrip("/") for u in urls]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self._next = itertools.cycle(range(len(self.urls)))
        self._lock = threading.Lock()

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
        import httpx

        errors: list[str] = []
        for base in self._order():
            try:
                resp = httpx.post(base + path, json=body, headers=self.headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
                continue
            if (data := self._handle(base, resp, errors)) is not None:
                return data
        raise RewardError("every reward server failed: " + "; ".join(errors))

    async def apost(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        errors: list[str] = []
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for base in self._order():
                try:
                    resp = await client.post(base + path, json=body, headers=self.headers)
                except httpx.HTTPError as exc:
                    errors.append(f"{base}: {type(exc).__name__}: {exc}")
                    continue
                if (data := self._handle(base, resp, errors)) is not None:
                    return data
        raise RewardError("every reward server failed: " + "; ".join(errors))
