"""Eval's stage 1: the captions of a task's media, either written by the captioner through annotate's caption
stage (``captions/<task>``: cached by shard, resumable) or read from a precomputed captions file (``captions:``).
The items without a caption are named with the reason, and the captions' hygiene flags are rated."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass

from caprl_kit.annotate.config import AnnotateConfig
from caprl_kit.annotate.pipeline import caption
from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.evaluate.captions_file import CaptionsFileConfig, precomputed, read_captions
from caprl_kit.evaluate.config import EvalConfig
from caprl_kit.io.fs import atomic_write_text, join, url_to_fs
from caprl_kit.io.parquet import read_shard
from caprl_kit.io.readers import expand_paths
from caprl_kit.io.rundir import RunDir, prepare_output
from caprl_kit.log import get_logger
from caprl_kit.monitors import flag_counts, flag_rates
from caprl_kit.progress import Progress
from caprl_kit.schemas.annotation import AnnotationRow
from caprl_kit.schemas.layout import EVAL_CAPTIONS_DIR

log = get_logger(__name__)


@dataclass
class ShardTally:
    """The shards a run's stages wrote now and skipped (done by an earlier run): the summary's "shards written /
    skipped" (captions and answers, every task)."""

    written: int = 0
    skipped: int = 0

    def add(self, written: int, skipped: int) -> None:
        self.written += written
        self.skipped += skipped


def captions_for(
    cfg: EvalConfig, task: str, media: list[tuple[str, str]], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float], str | None]:
    """Stage 1: the captioner's captions, the precomputed ones (``captions:``) or an earlier run's
    (``captions_from:``), the last two with their digest."""
    if cfg.captions_from is not None:
        return saved_captions(cfg.captions_from, task, media)
    if cfg.captions is None:
        return (*caption_stage(cfg, task, media, progress, shards), None)
    c = cfg.captions
    stamps = []
    for file in expand_paths(c.path, "captions.path", "CapRL-2M/*.parquet") or [str(c.path)]:
        fs, path = url_to_fs(file)
        info = fs.info(path) if fs.exists(path) else {}
        stamps.append(f"{file}={info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag')}")
    key = c.path if isinstance(c.path, str) else tuple(c.path)
    return precomputed(c, media, _captions_table(key, c.media_root, c.caption_column, "|".join(stamps)))


@functools.lru_cache(maxsize=2)  # read once per run however many tasks use it; a changed file is read again
def _captions_table(
    path: str | tuple[str, ...], media_root: str | None, column: str, stamp: str
) -> dict[str, list[str]]:
    paths = path if isinstance(path, str) else list(path)
    return read_captions(CaptionsFileConfig(path=paths, media_root=media_root, caption_column=column))


def caption_stage(
    cfg: EvalConfig, task: str, media: list[tuple[str, str]], progress: Progress, shards: ShardTally | None = None
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float]]:
    """Captions (n per item) for ``media`` [(path, media_type)], via annotate's caption stage (cached by shard), why
    the items without a caption have none (``status: error_message``), and the captions' hygiene flag rates."""
    out = join(str(cfg.output_dir), EVAL_CAPTIONS_DIR.format(task=task))
    prepare_output(out, "annotate")  # claimed before the caption manifest lands in it (caption() keeps the claim)
    fs, base = url_to_fs(out)
    manifest = join(base, "manifest.jsonl")
    lines = "".join(json.dumps({"path": p, "key": p, "media_type": t}) + "\n" for p, t in media)
    if not fs.exists(manifest) or fs.cat(manifest).decode() != lines:
        atomic_write_text(fs, manifest, lines)
    media_type = media[0][1] if media else "image"
    acfg = AnnotateConfig.model_validate(
        {
            "input": {
                "path": join(out, "manifest.jsonl"),
                "format": "jsonl",
                "key_column": "key",
                "media_type": media_type,
            },
            "backend": cfg.captioner.model_dump(),
            "prompt": {"image": cfg.caption_prompt, "video": cfg.video_caption_prompt},
            "media": cfg.media.model_dump(),
            "sharding": cfg.sharding.model_dump(),
            "decode": cfg.decode.model_dump(),
            "runner": cfg.runner.model_dump(),
            "output_dir": out,
        }
    )
    done = caption(acfg, progress)
    if shards is not None:
        shards.add(done.shards_done, done.shards_skipped)
    captions, failed, flags = stage_captions(out)
    if failed:
        log.warning(
            "%s: %d of %d item(s) have no caption and will not be scored (e.g. %s)",
            task,
            len(failed),
            len(media),
            next(iter(failed.values())),
        )
    return captions, failed, flag_rates(dict(flags)) if flags else {}


def saved_captions(
    run: str, task: str, media: list[tuple[str, str]]
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, float], str]:
    """An earlier eval run's captions of ``media`` (its ``captions/<task>``; ``captions_from``): the captions by media,
    why the others have none (failed there, or not captioned there), the folder's caption flag rates, and a digest
    of the captions used (the answers are cached under it, as for precomputed captions)."""
    out = join(run, EVAL_CAPTIONS_DIR.format(task=task))
    found, failed_there, flags = stage_captions(out)
    captions: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for path, _kind in media:
        if path in found:
            captions[path] = found[path]
        else:
            failed[path] = failed_there.get(path, f"no_caption: {path} is not captioned in {run}")
    digest = hashlib.sha256(json.dumps(captions, sort_keys=True).encode()).hexdigest()
    return captions, failed, (flag_rates(dict(flags)) if flags else {}), digest


def refuse_missing_captions(cfg: EvalConfig) -> None:
    """``captions_from`` names a run holding every benchmark's captions folder; checked before anything is written."""
    if cfg.captions_from is None:
        return
    missing = []
    for bench in cfg.benchmarks:
        fs, path = url_to_fs(join(cfg.captions_from, EVAL_CAPTIONS_DIR.format(task=bench.name)))
        if not fs.exists(path):
            missing.append(bench.name)
    if missing:
        raise ConfigError(
            [
                ConfigIssue(
                    "captions_from",
                    f"{cfg.captions_from} holds no captions of {', '.join(missing)} "
                    f"({EVAL_CAPTIONS_DIR.format(task=missing[0])}/ is missing)",
                    "point it at a caprl eval run of the same benchmarks (task names), or remove it to caption anew",
                )
            ]
        )


def stage_captions(out: str) -> tuple[dict[str, list[str]], dict[str, str], Counter[str]]:
    """What a task's caption folder (``captions/<task>``) holds: the captions by media key (status ok), why the
    others have none (``status: error_message``), and the captions' hygiene flag counts. Items whose shard is not
    written yet are in neither."""
    captions: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    flags: Counter[str] = Counter()
    columns = ["key", "captions", "caption_flags", "status", "error_message"]
    for url in RunDir(out, AnnotationRow).shard_urls():
        for row in read_shard(url, AnnotationRow, columns=columns).to_pylist():
            if row["status"] == "ok" and row["captions"]:
                captions[row["key"]] = row["captions"]
                flags.update(flag_counts(row["caption_flags"] or []))
            else:
                failed[row["key"]] = f"{row['status']}: {row['error_message'] or 'no caption'}"
    return captions, failed, flags
