"""The four commands as functions: ``run(cfg)`` does exactly what ``caprl <verb> --config ...`` does."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from caprl_kit.registry import Registry

#: command name -> its config model (lazy). The config model names the module holding ``run``/``plan``.
COMMANDS = Registry("command")
COMMANDS.register("curate", target="caprl_kit.curate.config:CurateConfig")
COMMANDS.register("train", target="caprl_kit.train.config:TrainConfig")
COMMANDS.register("annotate", target="caprl_kit.annotate.config:AnnotateConfig")
COMMANDS.register("eval", target="caprl_kit.evaluate.config:EvalConfig")
COMMANDS.register("pairs", target="caprl_kit.pairs.config:PairsConfig")
COMMANDS.register("serve_reward", target="caprl_kit.rewards.server:RewardServerConfig")


class Progress(Protocol):
    """What long jobs report while they run. The CLI renders it with Rich; the library default ignores it."""

    def start(self, stage: str, total: int | None, completed: int = 0) -> None: ...

    def advance(self, stage: str, items: int = 1, failed: int = 0, tokens: int = 0) -> None: ...

    def finish(self, stage: str) -> None: ...


class NullProgress:
    def start(self, stage: str, total: int | None, completed: int = 0) -> None:
        pass

    def advance(self, stage: str, items: int = 1, failed: int = 0, tokens: int = 0) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


@dataclass
class RunReport:
    """What a run did, for the CLI's summary table and for callers."""

    command: str
    output_dir: str | None
    n_items: int = 0
    n_ok: int = 0
    n_failed: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    duration_s: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _module(cfg: Any):
    return importlib.import_module(cfg.pipeline_module)


def plan(cfg: Any) -> list[str]:
    """Human-readable lines saying what ``run`` would do; touches nothing."""
    return _module(cfg).plan(cfg)


def run(cfg: Any, *, overwrite: bool = False, retry_failed: bool = False, progress: Progress | None = None
        ) -> RunReport:
    """Run the command that ``cfg`` belongs to (``cfg.kind``). ``retry_failed``: redo the rows of a finished run
    whose status is a retryable failure (the commands whose ``run`` takes it; the others refuse it)."""
    import inspect

    from caprl_kit.errors import ConfigError, ConfigIssue

    fn = _module(cfg).run
    extra: dict[str, Any] = {}
    if retry_failed:
        if "retry_failed" not in inspect.signature(fn).parameters:
            raise ConfigError([ConfigIssue("--retry-failed", f"caprl {cfg.kind} does not redo single rows",
                                           "rerun without it; caprl annotate redoes its failed rows")])
        extra["retry_failed"] = True
    if retry_failed and overwrite:
        raise ConfigError([ConfigIssue("--retry-failed", "redoes rows of a finished run; --overwrite discards it",
                                       "pass one of them")])
    return fn(cfg, overwrite=overwrite, progress=progress or NullProgress(), **extra)
