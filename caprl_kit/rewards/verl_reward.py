"""verl custom reward function for CapRL (point verl at this file)::

    reward.custom_reward_function.path=$(python -c "import caprl_kit.rewards.verl_reward as m; print(m.__file__)")
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward_urls=http://rm-0:18889,http://rm-1:18889
    +reward.custom_reward_function.reward_kwargs.length_tokenizer=/models/Qwen2.5-VL-3B-Instruct
    +reward.custom_reward_function.reward_kwargs.length_weight=0.2

``compute_score`` is async: verl awaits it once per sample, concurrently; calls from one event loop are
coalesced into batched ``POST /get_reward`` requests (official body) to the reward servers (round-robin with
failover). The length term is computed here with the policy tokenizer (spec §2.3). On failure it logs and returns
score 0 with ``reward_error = 1`` — verl fails a whole GRPO group on an exception (verl_integration.md §2.3).
Every sample returns the same scalar keys: score, qa_reward, format_reward, length_reward, cap_tokens,
reward_error, and the caption monitors' 0/1 flags monitor_repetitive, monitor_boilerplate_opener,
monitor_meta_ending, monitor_empty (verl logs extra keys at validation, as ``val-aux/<data_source>/<key>``).

reward_kwargs: ``reward_urls`` (or env ``CAPRL_REWARD_URLS``), ``token_env``, ``length_tokenizer``,
``length_weight`` (0), ``length_l1`` (2048), ``length_l2`` (3072), ``batch_size`` (64), ``batch_wait_s`` (0.05),
``timeout_s`` (1800).
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache
from typing import Any

from caprl_kit.log import get_logger
from caprl_kit.mcq.options import render
from caprl_kit.monitors import FLAG_METRIC, TEXT_FLAGS, flag_values
from caprl_kit.rewards.base import RewardError, decode_ground_truth
from caprl_kit.rewards.client import RewardClient
from caprl_kit.rewards.length import length_score

log = get_logger(__name__)
KEYS = (
    "score",
    "served_reward",
    "qa_reward",
    "format_reward",
    "length_reward",
    "cap_tokens",
    "reward_error",
    *(FLAG_METRIC.format(f) for f in TEXT_FLAGS),
)


@lru_cache(maxsize=8)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@lru_cache(maxsize=8)
def _client(urls: str, token_env: str | None, timeout_s: float) -> RewardClient:
    token = os.environ.get(token_env) if token_env else None
    return RewardClient(urls, token=token, timeout_s=timeout_s)


class _Batcher:
    """Coalesces concurrent single-sample calls on one event loop into batched server requests."""

    def __init__(self, client: RewardClient, batch_size: int, wait_s: float):
        self.client, self.batch_size, self.wait_s = client, batch_size, wait_s
        self.pending: list[tuple[list[Any], asyncio.Future]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.sending: set[asyncio.Task] = set()  # references to in-flight sends (the loop holds tasks weakly)

    def submit(self, prompt: list[Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((prompt, fut))
        if len(self.pending) >= self.batch_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.wait_s, self._flush)
        return fut

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, batch: list[tuple[list[Any], asyncio.Future]]) -> None:
        body = {"prompts": [p for p, _ in batch], "query": [], "labels": []}
        try:
            data = await self.client.apost("/get_reward", body)
            rewards = data["rewards"]
            if len(rewards) != len(batch):
                raise RewardError(f"server answered {len(rewards)} rewards for {len(batch)} captions")
            qa = data.get("qa_rewards") or rewards
            fmt = data.get("format_rewards") or [0.0] * len(batch)
            for i, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result((float(rewards[i]), float(qa[i]), float(fmt[i])))
        except Exception as exc:  # noqa: BLE001 - whatever failed, every waiting sample hears of it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)


_BATCHERS: dict[tuple[int, str], _Batcher] = {}


def _batcher(client: RewardClient, urls: str, batch_size: int, wait_s: float) -> _Batcher:
    key = (id(asyncio.get_running_loop()), urls)
    if key not in _BATCHERS:
        _BATCHERS[key] = _Batcher(client, batch_size, wait_s)
    return _BATCHERS[key]


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    reward_urls: str | None = None,
    token_env: str | None = None,
    length_tokenizer: str | None = None,
    length_weight: float = 0.0,
    length_l1: int = 2048,
    length_l2: int = 3072,
    batch_size: int = 64,
    batch_wait_s: float = 0.05,
    timeout_s: float = 1800.0,
    **_: Any,
) -> dict[str, float]:
    caption = solution_str or ""
    monitors = flag_values(caption)
    cap_tokens = 0
    length_reward = 0.0
    if length_tokenizer and length_weight:
        cap_tokens = len(_tokenizer(length_tokenizer).encode(caption, add_special_tokens=False))
        length_reward = length_score(cap_tokens, length_l1, length_l2)
    try:
        urls = reward_urls or os.environ.get("CAPRL_REWARD_URLS", "")
        client = _client(urls, token_env, timeout_s)
        qas = decode_ground_truth(ground_truth)  # a bad or empty QA list fails this sample only, not its batch
        if not qas:
            raise RewardError("ground_truth holds no questions")
        prompt = [caption, [[render(q), q.answer] for q in qas]]
        total, qa, fmt = await _batcher(client, urls, batch_size, batch_wait_s).submit(prompt)
    except Exception as exc:  # noqa: BLE001 - a failed reward scores 0 with reward_error=1, never stops training
        log.error("CapRL reward failed for a %s sample (score 0, reward_error=1): %s", data_source, exc)
        return {
            "score": 0.0,
            "served_reward": 0.0,
            "qa_reward": 0.0,
            "format_reward": 0.0,
            "length_reward": float(length_reward),
            "cap_tokens": float(cap_tokens),
            "reward_error": 1.0,
            **monitors,
        }
    return {
        "score": total + length_weight * length_reward,
        "served_reward": total,  # what the server summed (QA, + its format term for video): a GDPO term
        "qa_reward": qa,
        "format_reward": fmt,
        "length_reward": float(length_reward),
        "cap_tokens": float(cap_tokens),
        "reward_error": 0.0,
        **monitors,
    }
