"""``export(format, run_dir, out_dir)``: one caprl run -> the files another tool reads.

The steps, in order: the format is looked up (a typo gets "did you mean"); the options are checked against it;
the run's kind is read from its marker / manifest and refused when the format does not take it; the output is
claimed (a new or empty folder, or a previous export, whose own files are replaced — nothing else is ever
deleted); the format's writer for that kind writes its files; ``export.json`` records what was written, what was
left out and why.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from caprl_kit.errors import CaprlError
from caprl_kit.exports.formats import FORMATS, OPTIONS, ExportFormat
from caprl_kit.exports.media import MEDIA_DIR, MODES, MediaPaths
from caprl_kit.exports.runs import TAKES, WHAT, MediaRef, Run, open_run
from caprl_kit.log import get_logger
from caprl_kit.schemas.layout import EXPORT_REPORT

log = get_logger(__name__)

COMMAND = "data export"
REPORT = EXPORT_REPORT
MAX_NOTES = 20


@dataclass(frozen=True)
class ExportOptions:
    """What a format may be asked beyond the run and the output; ``None`` is the format's default. A set option
    that the format does not read is refused, never ignored.

    ``media``: ``link`` (local files referenced where they are) or ``copy`` (every medium copied into ``media/``).
    ``captions``: ``all`` (one row per caption of an item; the training formats' default) or ``first``.
    ``lmms_task``: the lmms-eval task the captions answer (``detailcaps``, ``captionqa_natural``, ...).
    ``doc_ids``: a JSON file ``{image file name: lmms-eval doc_id}`` (default: the item's place in the run's input).
    """

    media: str | None = None
    captions: str | None = None
    lmms_task: str | None = None
    doc_ids: str | None = None

    def checked(self, fmt: ExportFormat, run: Run | None = None) -> ExportOptions:
        """These options with the format's defaults filled in; one message for the first one that does not fit."""
        for name in OPTIONS:
            if getattr(self, name) is not None and name not in fmt.options:
                raise CaprlError(f"--{name.replace('_', '-')} does not apply to --format {fmt.name}")
        if self.media is not None and self.media not in MODES:
            raise CaprlError(f"--media must be one of {', '.join(MODES)}, got '{self.media}'")
        if self.captions is not None and self.captions not in ("all", "first"):
            raise CaprlError(f"--captions must be all or first, got '{self.captions}'")
        if self.captions == "all" and fmt.one_caption:
            raise CaprlError(
                f"--captions all: a {fmt.name} file holds one caption per image (it takes each item's first "
                "caption); leave --captions out"
            )
        if self.captions is not None and run is not None and run.kind not in ("annotate", "eval"):
            raise CaprlError(
                f"--captions picks among an annotate or eval run's n captions per item; {run.url} is {WHAT[run.kind]}"
            )
        return ExportOptions(
            media=self.media or "link",
            captions=self.captions or ("first" if fmt.one_caption else "all"),
            lmms_task=self.lmms_task,
            doc_ids=self.doc_ids,
        )


@dataclass
class ExportReport:
    """What an export wrote: ``files`` (relative to ``output``) with their rows, ``media_written`` (files under
    ``media/``), ``skipped`` (rows or items left out, by reason) and ``notes`` for the user."""

    format: str
    run: str
    kind: str
    output: str
    media: str
    files: dict[str, int] = field(default_factory=dict)
    media_written: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> str:
        return json.dumps({"command": COMMAND, **asdict(self)}, indent=2)


class JsonlFile:
    """Rows written one JSON object a line; ``rows`` counts them."""

    def __init__(self, fh: IO[str]):
        self._fh = fh
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows += 1


class ExportDir:
    """The export folder a writer fills: JSON / JSONL files (each written under a temp name, then renamed), media
    paths, and the tally of what was left out."""

    def __init__(self, root: Path, opts: ExportOptions):
        self.root = root
        self.opts = opts
        self.media = MediaPaths(root, opts.media or "link")
        self.files: dict[str, int] = {}
        self.skipped: Counter[str] = Counter()
        self.notes: list[str] = []

    # the Tally the run readers count on
    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.notes.append(text)

    def media_path(self, ref: MediaRef) -> str | None:
        """The row's media path relative to the export folder; None (counted) when the run has none reachable."""
        return self.media.path(ref, self)

    @contextmanager
    def jsonl(self, name: str) -> Iterator[JsonlFile]:
        """A JSONL file ``name`` in the export folder; an empty one is not kept."""
        file = self.root / name
        tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                out = JsonlFile(fh)
                yield out
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if out.rows:
            os.replace(tmp, file)
            self.files[name] = out.rows
        else:
            tmp.unlink()

    def json(self, name: str, obj: Any, rows: int) -> None:
        """A JSON file ``name`` holding ``obj`` (``rows``: how many records it holds, for the report)."""
        file = self.root / name
        tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, file)
        self.files[name] = rows


def _local_output(out_dir: str | Path) -> Path:
    text = str(out_dir)
    if "://" in text and not text.startswith("file://"):
        raise CaprlError(
            f"--output {text}: exports are written to a local folder (trainers read their data and media from "
            "local paths); pass a local --output"
        )
    return Path(text.removeprefix("file://")).expanduser().absolute()


def _claim(out: Path) -> None:
    """Claim ``out`` as ``prepare_output`` claims a helper command's folder (new, empty, or a previous export;
    anything else refused naming it), then remove what the previous export there wrote (its ``export.json``
    lists it) and nothing else."""
    from caprl_kit.io.rundir import prepare_output

    prepare_output(str(out), COMMAND, same_command=True, option="--output")
    previous = out / REPORT
    if not previous.is_file():
        return
    try:
        before = json.loads(previous.read_text())
        names = [*before.get("files", {}), *before.get("media_written", [])]
    except (ValueError, AttributeError, TypeError):
        names = []
    for name in names:
        file = (out / name).resolve()
        if file.is_file() and out.resolve() in file.parents:
            file.unlink()
    media = out / MEDIA_DIR
    if media.is_dir() and not any(media.iterdir()):
        media.rmdir()
    previous.unlink()


def export(
    fmt: str,
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    media: str | None = None,
    captions: str | None = None,
    lmms_task: str | None = None,
    doc_ids: str | None = None,
) -> ExportReport:
    """Export the caprl run in ``run_dir`` to ``out_dir`` in format ``fmt`` (``FORMATS.names()``); see
    ``ExportOptions`` for the options. Raises ``CaprlError`` with one message for a format that does not take the
    run, a folder that is not a caprl run, an output that is not ours, or a run with nothing to export."""
    from caprl_kit.io.lock import output_lock_scope

    target: ExportFormat = FORMATS.get(fmt)
    options = ExportOptions(media, captions, lmms_task, doc_ids)
    options.checked(target)
    run = open_run(str(run_dir))
    writer = target.writers.get(run.kind)
    if writer is None:
        fits = [n for n in FORMATS.names() if run.kind in FORMATS.get(n).writers]
        raise CaprlError(
            f"--format {target.name} does not take {WHAT[run.kind]} ({run.url}): it exports "
            f"{' and '.join(TAKES[k] for k in target.kinds())}. For {WHAT[run.kind]} use --format "
            f"{', '.join(fits[:-1]) + ' or ' if len(fits) > 1 else ''}{fits[-1]}"
        )
    opts = options.checked(target, run)
    if target.check is not None:
        target.check(run, opts)
    out = _local_output(out_dir)
    with output_lock_scope():
        _claim(out)
        folder = ExportDir(out, opts)
        writer(run, folder, opts)
        report = ExportReport(
            format=target.name,
            run=run.url,
            kind=run.kind,
            output=str(out),
            media=opts.media or "link",
            files=dict(folder.files),
            media_written=list(folder.media.written),
            skipped=dict(sorted(folder.skipped.items())),
            notes=folder.notes[:MAX_NOTES]
            + ([f"... and {len(folder.notes) - MAX_NOTES} more"] if len(folder.notes) > MAX_NOTES else []),
        )
        if folder.media.urls:
            report.notes.append(
                f"{folder.media.urls} row(s) name their media by URL; LLaMA-Factory and EasyR1 read local files: "
                "export with --media copy to download them into media/"
            )
        if not report.rows:
            left = ", ".join(f"{n} {why}" for why, n in report.skipped.items()) or "no rows"
            raise CaprlError(f"nothing to export from {run.url} as {target.name}: {left}")
        (out / REPORT).write_text(report.to_json(), encoding="utf-8")
    log.info("exported %s (%s) as %s into %s: %d row(s)", run.url, run.kind, target.name, out, report.rows)
    return report
