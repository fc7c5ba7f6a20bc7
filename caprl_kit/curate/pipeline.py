"""caprl curate: not built yet; the config is validated so recipes can be written and dry-run today."""

from __future__ import annotations

from caprl_kit.errors import CaprlError


def plan(cfg) -> list[str]:
    return [f"caprl curate: the pipeline itself is not available in this version; only the config was validated"]


def run(cfg, *, overwrite: bool = False, progress=None):
    raise CaprlError("caprl curate is not available in this version yet (only --dry-run works)")
