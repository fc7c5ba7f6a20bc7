"""The engines of one command in this process: each engine config is built once, shared by the command's stages
and tasks (eval's benchmarks, curate's stages, pairs' sampling), and closed when the command ends, also on failure
and Ctrl-C.

``with engine_pool():`` around a command (``runners.driver.command``) makes ``build_backend`` hand out pooled
engines; a pool opened inside another one is the outer one (a command run by another command shares its engines).
Without an open pool ``build_backend`` builds an engine the caller owns and closes (``release``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from caprl_kit.log import get_logger

if TYPE_CHECKING:
    from caprl_kit.backends.base import Backend
    from caprl_kit.backends.config import BackendConfig

log = get_logger(__name__)


class EnginePool:
    """Engines keyed by their whole config; ``builds`` counts the engines this pool built."""

    def __init__(self) -> None:
        self._engines: dict[str, Backend] = {}
        self.builds = 0

    def get(self, cfg: BackendConfig) -> Backend:
        from caprl_kit.backends import BACKENDS

        key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = BACKENDS.get(cfg.name)(cfg)
            self.builds += 1
            log.debug("built engine %s:%s (%d in this command)", cfg.name, cfg.model, self.builds)
        return engine

    def owns(self, engine: Any) -> bool:
        return any(engine is e for e in self._engines.values())

    def close(self) -> None:
        """Close every engine, the last built first; one that fails to close does not keep the others open."""
        engines, self._engines = list(self._engines.values()), {}
        for engine in reversed(engines):
            try:
                engine.close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more than this one's error
                log.warning("closing engine %s failed: %r", getattr(engine, "model_id", engine), exc)


_open: list[EnginePool] = []


def current_pool() -> EnginePool | None:
    return _open[-1] if _open else None


@contextlib.contextmanager
def engine_pool() -> Iterator[EnginePool]:
    """The command's pool: a new one that closes its engines on exit, or the one already open."""
    if _open:
        yield _open[-1]
        return
    pool = EnginePool()
    _open.append(pool)
    try:
        yield pool
    finally:
        _open.pop()
        pool.close()


def release(engine: Any) -> None:
    """A worker is done with ``engine``: close it unless the command's pool owns it (the pool closes it later)."""
    pool = current_pool()
    if engine is not None and not (pool is not None and pool.owns(engine)):
        engine.close()
