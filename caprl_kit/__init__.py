"""caprl-kit: the CapRL method end to end (curate, train, annotate, eval).

The public API is loaded lazily so that ``import caprl_kit`` and ``caprl --help`` stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": "caprl_kit.config:load_config",
    "dump_config": "caprl_kit.config:dump_config",
    "run": "caprl_kit.commands:run",
    "build_backend": "caprl_kit.backends:build_backend",
    "Request": "caprl_kit.backends.base:Request",
    "Response": "caprl_kit.backends.base:Response",
    "SamplingParams": "caprl_kit.backends.base:SamplingParams",
}

__all__ = ["__version__", *_LAZY]  # noqa: PLE0604 - _LAZY's keys are strings; ruff does not see through the *


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'caprl_kit' has no attribute '{name}'")
    module, _, attr = _LAZY[name].partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
