"""Deterministic sharding of a streamed input: shard ``i`` holds items ``[i*size, (i+1)*size)`` in input order."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ShardSpec:
    """What a worker needs to know about its unit of work; items travel separately (as paths or rows)."""

    shard_id: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.shard_id:05d}"

    def __len__(self) -> int:
        return self.stop - self.start


def iter_shards(items: Iterable[T], shard_size: int) -> Iterator[tuple[ShardSpec, list[T]]]:
    """Cut a stream into consecutive shards; holds one shard in memory at a time."""
    it = iter(items)
    for shard_id in itertools.count():
        chunk = list(itertools.islice(it, shard_size))
        if not chunk:
            return
        start = shard_id * shard_size
        yield ShardSpec(shard_id, start, start + len(chunk)), chunk


class Fingerprint:
    """Streaming sha256 over item identities, so changed inputs are detected without holding the listing."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, *parts: object) -> None:
        self._h.update(repr(parts).encode())
        self._h.update(b"\n")
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()
