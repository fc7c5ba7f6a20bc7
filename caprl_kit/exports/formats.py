"""The export formats: what each one is, which kinds of caprl run it takes, and its writer for each.

Light on purpose (``caprl --help`` lists the names without importing a writer): every format registers here as a
lazy ``"module:attr"`` entry naming an ``ExportFormat`` in its target family's module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from caprl_kit.registry import Registry

if TYPE_CHECKING:
    from caprl_kit.exports.core import ExportDir, ExportOptions
    from caprl_kit.exports.runs import Run

#: one writer per run kind: reads the run, writes its rows into the export folder (counting what it skips)
Writer = Callable[["Run", "ExportDir", "ExportOptions"], None]

#: a format's checks of a run and its options, made before the output is claimed (raises ``CaprlError``)
Check = Callable[["Run", "ExportOptions"], None]

#: the option names a format may take beyond the run folder and the output (``ExportOptions`` fields)
OPTIONS = ("media", "captions", "lmms_task", "doc_ids")


@dataclass(frozen=True)
class ExportFormat:
    """An export target: ``writers`` maps each run kind it takes (curate, pairs, annotate, eval) to its writer;
    ``options``: the ``ExportOptions`` it reads (any other one set is refused); ``one_caption``: the format holds
    one caption per image (a submission), so ``captions`` defaults to ``first`` and ``all`` is refused; ``check``:
    what else it needs of the run and the options, refused before anything is written."""

    name: str
    summary: str
    writers: Mapping[str, Writer]
    options: frozenset[str] = field(default_factory=frozenset)
    one_caption: bool = False
    check: Check | None = None

    def kinds(self) -> list[str]:
        return list(self.writers)


FORMATS = Registry("export format")
FORMATS.register("llamafactory", target="caprl_kit.exports.llamafactory:FORMAT")
FORMATS.register("ms_swift", target="caprl_kit.exports.ms_swift:FORMAT")
FORMATS.register("easyr1", target="caprl_kit.exports.easyr1:FORMAT")
FORMATS.register("caparena", target="caprl_kit.exports.benchmarks:CAPARENA")
FORMATS.register("capmas", target="caprl_kit.exports.benchmarks:CAPMAS")
FORMATS.register("lmms_eval", target="caprl_kit.exports.lmms_eval:FORMAT")
