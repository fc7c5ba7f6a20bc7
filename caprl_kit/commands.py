"""The four commands as functions: ``run(cfg)`` does exactly what ``caprl <verb> --config ...`` does."""

from __future__ import annotations

import importlib
from typing import Any

from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.registry import Registry

#: command name -> its config model (lazy). The config model names the module holding ``run``/``plan``.
COMMANDS = Registry("command")
COMMANDS.register("curate", target="caprl_kit.curate.config:CurateConfig")
COMMANDS.register("train", target="caprl_kit.train.config:TrainConfig")
COMMANDS.register("annotate", target="caprl_kit.annotate.config:AnnotateConfig")
COMMANDS.register("eval", target="caprl_kit.evaluate.config:EvalConfig")
COMMANDS.register("pairs", target="caprl_kit.pairs.config:PairsConfig")
COMMANDS.register("serve_reward", target="caprl_kit.rewards.server:RewardServerConfig")


def _module(cfg: Any):
    return importlib.import_module(cfg.pipeline_module)


def plan(cfg: Any) -> list[str]:
    """Human-readable lines saying what ``run`` would do; touches nothing."""
    return _module(cfg).plan(cfg)


def run(
    cfg: Any, *, overwrite: bool = False, retry_failed: bool = False, progress: Progress | None = None
) -> RunReport:
    """Run the command that ``cfg`` belongs to (``cfg.kind``). ``retry_failed``: redo the rows of a finished run
    whose status is a retryable failure (the commands whose ``run`` takes it; the others refuse it)."""
    import inspect

    from caprl_kit.errors import ConfigError, ConfigIssue

    fn = _module(cfg).run
    extra: dict[str, Any] = {}
    if retry_failed:
        if "retry_failed" not in inspect.signature(fn).parameters:
            raise ConfigError(
                [
                    ConfigIssue(
                        "--retry-failed",
                        f"caprl {cfg.kind} does not redo single rows",
                        "rerun without it; caprl annotate redoes its failed rows",
                    )
                ]
            )
        extra["retry_failed"] = True
    if retry_failed and overwrite:
        raise ConfigError(
            [
                ConfigIssue(
                    "--retry-failed", "redoes rows of a finished run; --overwrite discards it", "pass one of them"
                )
            ]
        )
    return fn(cfg, overwrite=overwrite, progress=progress or NullProgress(), **extra)


__all__ = ["COMMANDS", "NullProgress", "Progress", "RunReport", "plan", "run"]
