"""Guards for optional dependencies: a clear install hint instead of a bare ImportError."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from caprl_kit.errors import MissingExtra


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtra`` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"'{module}' is required here but could not be imported ({exc}). "
            f"Install it with: pip install 'caprl-kit[{extra}]'"
        ) from exc
