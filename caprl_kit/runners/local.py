"""In-process runner: map the worker over shards one after another, skipping finished ones."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from caprl_kit.errors import CaprlError
from caprl_kit.io.shards import ShardSpec
from caprl_kit.log import get_logger
from caprl_kit.schemas.run import ShardStats

log = get_logger(__name__)

Worker = Callable[[ShardSpec, list[Any]], ShardStats]


class ShardFailed(CaprlError):
    pass


def run_local(
    shards: Iterable[tuple[ShardSpec, list[Any]]],
    worker: Worker,
    *,
    done: set[int] = frozenset(),  # type: ignore[assignment]
    max_retries: int = 1,
) -> tuple[list[ShardStats], int]:
    """Run ``worker`` on every shard not in ``done``. Returns (stats of shards written now, shards skipped).

    A worker records per-item failures as rows; an exception means the shard as a whole failed, and it is
    retried ``max_retries`` times before the run stops with ``ShardFailed`` (finished shards stay done).
    """
    written: list[ShardStats] = []
    skipped = 0
    for spec, items in shards:
        if spec.shard_id in done:
            skipped += 1
            continue
        for attempt in range(max_retries + 1):
            try:
                written.append(worker(spec, items))
                break
            except CaprlError:
                raise
            except Exception as exc:  # a whole-shard failure: retry, then stop the run
                if attempt == max_retries:
                    raise ShardFailed(f"shard {spec.name} failed {attempt + 1} time(s): {exc!r}") from exc
                log.warning("shard %s failed (%r); retrying (%d/%d)", spec.name, exc, attempt + 1, max_retries)
    return written, skipped
