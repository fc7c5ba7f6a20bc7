"""Exception hierarchy. Every error the library raises on purpose is a ``CaprlError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CaprlError(Exception):
    """Root of caprl-kit's errors; the CLI turns these into a message and exit code 2."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (dotted key path), what, and an optional hint."""

    path: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"{self.path or '<root>'}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(CaprlError):
    """A config failed validation. Holds *all* problems found, not only the first."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = [f"{head}: {len(self.issues)} problem(s)"] + [f"  - {i.render()}" for i in self.issues]
        super().__init__("\n".join(lines))


class SchemaError(CaprlError):
    """Rows did not match an artifact's Arrow schema, or a file carries another schema."""


class ResumeRefused(CaprlError):
    """An output directory holds a run whose input or config differs from this one."""


class BackendError(CaprlError):
    """A generation back end could not be built or failed as a whole (not per request)."""


class EngineDown(BackendError):
    """The engine is unavailable (server down, retries used up, the engine died) and stays so: the run stops with
    the shards it held uncommitted."""


class ShardFailed(CaprlError):
    """A shard (or the shards a broken stream held) failed ``runner.max_shard_retries`` times in a row for a
    reason that is not an item's own (those are rows): the run stops with them uncommitted."""


class EngineFailed(Exception):
    """A request failed for an engine-level reason (``backends.base.engine_failed``). Not a ``CaprlError``: the
    runner redoes the shards the stream held but had not committed, and gives up with ``EngineDown`` when the
    engine keeps failing (``runner.max_shard_retries`` times in a row)."""


class MediaError(CaprlError):
    """An image or video could not be loaded. ``kind`` is a stable machine-readable reason."""

    def __init__(self, kind: str, source: str, reason: str):
        self.kind = kind
        self.source = source
        self.reason = reason
        super().__init__(f"{kind}: {source}: {reason}")

    def __reduce__(self) -> tuple[Any, tuple[str, str, str], dict[str, Any] | None]:
        # pickle (decode processes, Ray, the multiprocess runner) rebuilds it from its three fields, not from the
        # formatted message that ``Exception`` would pass back to __init__
        return type(self), (self.kind, self.source, self.reason), self.__dict__ or None


class MissingExtra(CaprlError):
    """An optional dependency is not installed."""


class InvalidMCQ(CaprlError):
    """A multiple-choice question failed the strict validator (``caprl_kit.mcq.validate``). ``kind`` is a stable
    machine-readable reason (e.g. ``answer_not_a_label``), ``reason`` the human one, ``where`` the offending item
    (e.g. ``prompts[1].qa[0]``) when the caller named it."""

    def __init__(self, kind: str, reason: str, where: str | None = None):
        self.kind = kind
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)
