"""The one sharded-stage driver behind annotate, every curate stage and both eval stages.

``begin`` is what a run does before its first shard (an output folder is set, the input is listed once for its
fingerprint, the engines are checked, the output folder is claimed); ``run_stage`` is one sharded stage (open or
resume the stage's run folder, refusing a changed input or config with the changed keys; progress; the runner
maps the stage's worker over the shards that are not done). A verb's ``run()`` keeps only what is its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.io.rundir import RunDir, prepare_output
from caprl_kit.io.shards import Fingerprint, ShardSpec
from caprl_kit.progress import Progress
from caprl_kit.schemas.run import ShardStats

Shards = Iterable[tuple[ShardSpec, list[Any]]]
F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """A command's ``run``: the engines it builds are built once per config and shared by its stages and tasks
    (``backends.pool``), and closed, then the output lock its ``begin`` took released, when it returns, fails or is
    interrupted. A command run inside another shares the outer one's engines."""
    from caprl_kit.backends.pool import engine_pool
    from caprl_kit.io.lock import output_lock_scope

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with output_lock_scope(), engine_pool():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]  # functools.wraps keeps fn's signature


@dataclass(frozen=True)
class Listing:
    """The input as the run saw it when it began."""

    fingerprint: str
    n_items: int


def fingerprint_items(items: Iterable[Any]) -> Listing:
    """One streaming pass: sha256 over the ordered keys, sources and sizes (``InputItem``s) + the count."""
    fp = Fingerprint()
    for it in items:
        fp.add(it.key, it.source, it.size, it.media_type)
    return Listing(fp.hexdigest(), fp.count)


def begin(
    cfg: Any,
    command: str,
    listing: Callable[[], Listing],
    engines: Mapping[str, Any],
    *,
    overwrite: bool,
    record_config: bool = True,
    empty: Callable[[], str] | None = None,
) -> Listing:
    """Checks in the order that writes nothing until all passed: an output folder is set, the input lists (and
    yields something: an empty one is ``EmptyInput`` with the message ``empty()`` builds, naming what was looked
    for and where), every engine's package and local model are there; then the output folder is claimed
    (``--overwrite`` only ever removes a caprl run) and the resolved config recorded (``record_config=False`` where
    the root is itself a stage folder, whose ``RunDir.open`` compares the previous resolved config before it writes
    the new one)."""
    from caprl_kit.backends import preflight_backend
    from caprl_kit.io.empty import EmptyInput

    if not cfg.output_dir:
        raise ConfigError([ConfigIssue("output_dir", "no output directory", "pass --output DIR or set output_dir")])
    seen = listing()
    if seen.n_items == 0 and empty is not None:
        raise EmptyInput(empty())
    for key, backend in engines.items():
        preflight_backend(backend, key)
    prepare_output(str(cfg.output_dir), command, overwrite=overwrite, config=cfg if record_config else None)
    return seen


@dataclass
class Stage:
    """One sharded stage: where it writes, what its output depends on, its worker and its shards."""

    name: str  # progress label; the manifest says ``command``
    command: str
    run_dir: RunDir
    config_hash: str
    worker: Callable[[Progress], Any]
    shards: Callable[[], Shards]
    total: int | None = None  # progress total when it is not the item count
    engines: tuple[Any, ...] = ()  # the BackendConfigs a worker builds: what it asks of the cluster (GPUs)
    redo: frozenset[int] = frozenset()  # finished shards to run again (their worker keeps what it need not redo)


def run_stage(cfg: Any, stage: Stage, listing: Listing, *, progress: Progress) -> tuple[list[ShardStats], int]:
    """Open or resume ``stage`` and run its remaining shards; returns (stats written now, shards skipped). A
    previous run to discard was already removed by ``begin`` (``--overwrite`` claims the whole output folder)."""
    from caprl_kit.runners import RUNNERS
    from caprl_kit.runners.placement import worker_resources

    done = (
        stage.run_dir.open(
            command=stage.command,
            config=cfg,
            config_hash=stage.config_hash,
            input_fingerprint=listing.fingerprint,
            n_items=listing.n_items,
            shard_size=cfg.sharding.shard_size,
        )
        - stage.redo
    )
    total = stage.total if stage.total is not None else listing.n_items
    progress.start(stage.name, total=total, completed=min(total, len(done) * cfg.sharding.shard_size))
    r = cfg.runner
    written, skipped = RUNNERS.get(r.name)(
        stage.shards(),
        stage.worker,
        done=done,
        max_retries=r.max_shard_retries,
        num_workers=r.num_workers,
        address=r.address,
        progress=progress,
        stage=stage.name,
        resources=worker_resources(stage.engines, r),
        committed=lambda shard_id: None if shard_id in stage.redo else stage.run_dir.committed(shard_id),
    )
    progress.finish(stage.name)
    return written, skipped
