"""Exports of caprl runs to the files other tools read (docs/exports.md): trainers (LLaMA-Factory, ms-swift,
EasyR1) and caption benchmarks (CapArena-Auto, CapMAS / DOCCI, lmms-eval).

>>> from caprl_kit.exports import export                              # doctest: +SKIP
>>> export("llamafactory", "runs/caps", "exports/caps_lf")            # doctest: +SKIP

``caprl data export --format FORMAT RUN_DIR --output OUT_DIR`` does the same. The formats are a registry
(``FORMATS``): one module per target family, each an ``ExportFormat`` with a writer per kind of run it takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caprl_kit.exports.formats import FORMATS, ExportFormat

if TYPE_CHECKING:
    from caprl_kit.exports.core import ExportReport

__all__ = ["FORMATS", "ExportFormat", "export"]


def export(fmt: str, run_dir: Any, out_dir: Any, **options: Any) -> ExportReport:
    """Export the caprl run in ``run_dir`` to ``out_dir`` as ``fmt`` (see ``caprl_kit.exports.core.export``)."""
    from caprl_kit.exports.core import export as run_export

    return run_export(fmt, run_dir, out_dir, **options)
