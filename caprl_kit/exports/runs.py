"""The caprl runs an export reads: which kind a folder holds (from its marker / run manifest), and what it holds as
trainer-neutral items — curated QA rows, preference pairs, captioned media — read from the run's own files.

Kinds: ``curate`` (``dataset/{train,val}.parquet``), ``pairs`` (``caprl train pairs``: ``pairs.parquet``),
``annotate`` (caption shards), ``eval`` (``captions/<task>/``, each an annotate run). Rows that cannot be exported
(a failed item, no caption, no media) are counted by reason on the ``Tally``, never dropped silently.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import join, url_to_fs
from caprl_kit.schemas.layout import CURATED_SPLIT, EVAL_CAPTIONS_DIR, PAIRS, RUN_MANIFEST

#: the command a run's marker names -> the kind of run an export reads
KINDS = {"curate": "curate", "pairs": "pairs", "annotate": "annotate", "eval": "eval"}
#: each kind in words, for the messages: what it is, and (plural) what a format takes
WHAT = {"curate": "a curate run", "pairs": "a train pairs run", "annotate": "an annotate run", "eval": "an eval run"}
TAKES = {
    "curate": "curate runs (dataset/train.parquet)",
    "pairs": "train pairs runs (pairs.parquet)",
    "annotate": "annotate runs (caption shards)",
    "eval": "eval runs (captions/<task>/)",
}
PLACEHOLDERS = ("<image>", "<video>")


class Tally(Protocol):
    """Where a reader counts what it leaves out and says what the user should know."""

    def skip(self, reason: str, n: int = 1) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class Run:
    """A caprl run folder: ``url`` as given, ``kind`` one of ``KINDS``' values."""

    url: str
    kind: str


@dataclass(frozen=True)
class MediaRef:
    """Where an item's media is: a local path or URL (``source``), and/or its embedded bytes (``data``)."""

    source: str | None
    data: bytes | None
    media_type: str = "image"

    @property
    def token(self) -> str:
        """The trainers' placeholder for this media in a prompt."""
        return "<video>" if self.media_type == "video" else "<image>"

    @property
    def column(self) -> str:
        """The trainers' column for this media's paths."""
        return "videos" if self.media_type == "video" else "images"


@dataclass(frozen=True)
class QAItem:
    """A curated item: its media, the caption prompt (no placeholder) and its kept MCQs
    (``{question, choices, answer}``)."""

    split: str
    id: str
    media: MediaRef
    prompt: str
    questions: list[dict[str, Any]]


@dataclass(frozen=True)
class PairItem:
    """A preference pair: the media, the caption prompt (no placeholder), the chosen and the rejected caption."""

    id: str
    media: MediaRef
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class CaptionItem:
    """A captioned item of an annotate run: ``position`` is its place in the run's input (shard x shard size +
    row), ``image_id`` the media's file name (what benchmark submissions are keyed by), ``captions`` all n."""

    key: str
    position: int
    image_id: str
    media: MediaRef
    prompt: str
    captions: list[str]
    model: str


@dataclass(frozen=True)
class CaptionRun:
    """The annotate run holding a set of captions: the run itself, or one task's ``captions/<task>`` of an eval."""

    task: str | None
    url: str


def open_run(url: str) -> Run:
    """The run in ``url`` and its kind; a folder that is not a caprl run, or a run of another command, is refused
    with one message naming what an export reads."""
    from caprl_kit.io.rundir import is_caprl_run, run_command

    fs, path = url_to_fs(str(url))
    takes = ", ".join(TAKES.values())
    if not fs.exists(path) or not fs.isdir(path):
        raise CaprlError(f"{url} is not a folder: pass RUN_DIR the output folder of a caprl run ({takes})")
    if not is_caprl_run(fs, path):
        raise CaprlError(f"{url} is not a caprl run (no caprl_run.json or run_manifest.json): exports read {takes}")
    command = run_command(fs, path)
    kind = KINDS.get(command or "")
    if kind is None:
        raise CaprlError(
            f"{url} is a caprl {command or 'run of unknown command'} output, which has nothing to export: "
            f"exports read {takes}"
        )
    return Run(str(url).rstrip("/"), kind)


def strip_placeholders(text: str) -> str:
    """A prompt without its media placeholders (each trainer's own goes back in front)."""
    for token in PLACEHOLDERS:
        text = text.replace(token, "")
    return text.strip()


def image_id(source: str | None, key: str) -> str:
    """The media's file name (``test_01258.jpg``): what CapArena-Auto and CapMAS key their captions by."""
    if source:
        path = urlparse(source).path if "://" in source else source
        if posixpath.basename(path):
            return posixpath.basename(path)
    return posixpath.basename(key.rstrip("/")) or key


# --------------------------------------------------------------------------- curate


def qa_items(run: Run, tally: Tally) -> Iterator[QAItem]:
    """The curated rows of both splits (train, then val when there is one), in file order."""
    from caprl_kit.io.parquet import read_shard
    from caprl_kit.schemas.curate import CuratedQARow

    fs, root = url_to_fs(run.url)
    train = join(root, CURATED_SPLIT.format(split="train"))
    if not fs.exists(train):
        raise CaprlError(
            f"{run.url} has no {CURATED_SPLIT.format(split='train')} yet: the curate run has not reached its "
            "export stage. Finish it (rerun the same caprl curate command), then export"
        )
    for split in ("train", "val"):
        path = join(run.url, CURATED_SPLIT.format(split=split))
        if split == "val" and not fs.exists(join(root, CURATED_SPLIT.format(split=split))):
            continue
        for row in read_shard(path, CuratedQARow).to_pylist():
            video = bool(row.get("videos"))
            paths = row.get("videos") if video else row.get("images")
            image = row.get("image") or {}
            source = paths[0] if paths else image.get("path")
            data = None if video else image.get("bytes")
            prompt = next((m["content"] for m in row["prompt"] if m["role"] == "user"), "")
            questions = (row.get("reward_model") or {}).get("ground_truth") or []
            if not questions:
                tally.skip("no_questions")
                continue
            yield QAItem(
                split=split,
                id=row["id"],
                media=MediaRef(source, data, "video" if video else "image"),
                prompt=strip_placeholders(prompt),
                questions=[
                    {"question": q["question"], "choices": list(q["choices"]), "answer": q["answer"]} for q in questions
                ],
            )


# --------------------------------------------------------------------------- pairs


def pair_items(run: Run, tally: Tally) -> Iterator[PairItem]:
    """The preference pairs of a ``caprl train pairs`` run, in file order."""
    from caprl_kit.io.parquet import read_shard
    from caprl_kit.schemas.pairs import PreferencePairRow

    fs, root = url_to_fs(run.url)
    if not fs.exists(join(root, PAIRS)):
        raise CaprlError(
            f"{run.url} has no {PAIRS} yet: the pairs run has not finished. Finish it (rerun the same caprl train "
            "pairs command), then export"
        )
    for row in read_shard(join(run.url, PAIRS), PreferencePairRow).to_pylist():
        images = row.get("images") or []
        if not images:
            tally.skip("no_media")
            continue
        prompt = next((m["content"] for m in row["prompt"] if m["role"] == "user"), "")
        yield PairItem(
            id=row["id"],
            media=MediaRef(images[0], None, "image"),
            prompt=strip_placeholders(prompt),
            chosen=row["chosen"][-1]["content"],
            rejected=row["rejected"][-1]["content"],
        )


# --------------------------------------------------------------------------- annotate / eval captions


def caption_runs(run: Run) -> list[CaptionRun]:
    """The annotate runs holding ``run``'s captions: itself, or each task's ``captions/<task>`` of an eval run."""
    if run.kind == "annotate":
        return [CaptionRun(None, run.url)]
    fs, root = url_to_fs(run.url)
    base = join(root, EVAL_CAPTIONS_DIR.format(task=""))
    found = []
    if fs.exists(base):
        for entry in sorted(fs.ls(base, detail=False)):
            task = entry.rstrip("/").rpartition("/")[2]
            if fs.isdir(entry) and fs.exists(join(entry, RUN_MANIFEST)):
                found.append(CaptionRun(task, join(run.url, EVAL_CAPTIONS_DIR.format(task=task))))
    if not found:
        raise CaprlError(
            f"{run.url} holds no {EVAL_CAPTIONS_DIR.format(task='<task>')} caption runs: its captions were read "
            "from a captions file (captions.path), not written by the captioner. Export that file's annotate run, "
            "or submit the file itself"
        )
    return found


def caption_items(source: CaptionRun, tally: Tally, *, first: bool, with_media: bool = True) -> Iterator[CaptionItem]:
    """The captioned items of one annotate run, in input order; failed items and items without a caption are
    counted, not yielded. ``first``: the export takes an item's first caption only (said in a note when items have
    several); ``with_media``: read the embedded bytes too (a submission needs no media)."""
    from caprl_kit.io.parquet import read_shard
    from caprl_kit.io.rundir import RunDir
    from caprl_kit.schemas.annotation import AnnotationRow

    run = RunDir(source.url, AnnotationRow)
    manifest = run.manifest()
    done = sorted(run.done_shards())
    where = f"task {source.task}" if source.task else source.url
    if not done:
        raise CaprlError(f"{source.url} has no finished shard yet: nothing to export ({where})")
    if manifest is not None and len(done) < manifest.n_shards:
        tally.note(
            f"{where}: {manifest.n_shards - len(done)} of {manifest.n_shards} shard(s) are not finished; exported "
            "the finished ones (rerun the annotate command to finish the run, then export again)"
        )
    shard_size = manifest.shard_size if manifest is not None else None
    columns = ["key", "source", "media_type", "captions", "prompt", "model", "status"]
    if with_media:
        columns.append("media_bytes")
    n_multi = seen = 0
    for shard_id in done:
        rows = read_shard(run.shard_url(shard_id), AnnotationRow, columns=columns).to_pylist()
        for i, row in enumerate(rows):
            seen += 1
            if row["status"] != "ok":
                tally.skip(f"status {row['status']}")
                continue
            captions = [c for c in row["captions"] or [] if c and c.strip()]
            if not captions:
                tally.skip("no_caption")
                continue
            n_multi += len(captions) > 1
            yield CaptionItem(
                key=row["key"],
                position=shard_id * shard_size + i if shard_size else seen - 1,
                image_id=image_id(row["source"], row["key"]),
                media=MediaRef(row["source"], row.get("media_bytes"), row["media_type"] or "image"),
                prompt=strip_placeholders(row["prompt"] or ""),
                captions=captions,
                model=row["model"],
            )
    if n_multi:
        took = "took each one's first (caption_index 0)" if first else "exported every caption, one row each"
        tally.note(f"{where}: {n_multi} item(s) have several captions (sampling.n > 1); {took}")
