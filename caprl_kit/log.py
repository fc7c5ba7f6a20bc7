"""Library logging. The library only logs; the CLI decides how (and whether) to render."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the ``caprl_kit`` hierarchy. No handler is installed here."""
    if not name.startswith("caprl_kit"):
        name = f"caprl_kit.{name}"
    return logging.getLogger(name)
