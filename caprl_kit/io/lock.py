"""The lock on a command's OUTPUT: ``OUTPUT/.caprl.lock`` says which run is writing the folder.

``prepare_output`` takes it when a run claims its folder (before ``--overwrite`` removes anything); the command's
``run`` (decorated with ``runners.driver.command``) removes it when it returns, fails or is interrupted, and an
``atexit`` hook removes what a process still holds when it exits. The file holds the host, pid and start time of
the holder and is created atomically (``O_CREAT | O_EXCL`` on a local disk), so of two runs started on one folder
the second is refused with the holder's name. A lock whose holder is gone (same host, the pid is not alive) is
taken over with a warning; one from another host is never guessed about: the message says to delete the file if
that run is gone.

One lock per command: the folders a command writes below its own OUTPUT (eval's ``captions/<task>``, pairs'
``samples/``, a curriculum's stages) are covered by the lock this process holds on the OUTPUT, not locked again.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from caprl_kit.errors import CaprlError
from caprl_kit.io.fs import join, url_to_fs
from caprl_kit.io.stats import utc_now
from caprl_kit.log import get_logger
from caprl_kit.schemas.layout import OUTPUT_LOCK

log = get_logger(__name__)


class OutputLocked(CaprlError):
    """Another run holds the lock on the output folder."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the run's host, process id and start time (UTC)."""

    host: str
    pid: int
    since: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), utc_now())

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "since": self.since}, indent=2)


@dataclass(frozen=True)
class _Held:
    """A lock this process took: the folder (its key), the file and what the file says."""

    fs: Any
    file: str
    holder: Holder


_held: dict[str, _Held] = {}  # output folder key -> the lock this process holds on it
_guard = threading.RLock()


def _key(fs: Any, path: str) -> str:
    """The folder as one string across spellings: absolute for a local path, with its protocol otherwise."""
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path).rstrip("/")


def covering(url: str) -> str | None:
    """The output folder whose lock this process holds and that is ``url`` or contains it, else None."""
    fs, path = url_to_fs(str(url))
    key = _key(fs, path)
    with _guard:
        return next((k for k in _held if key == k or key.startswith(k.rstrip("/") + "/")), None)


def acquire(url: str) -> bool:
    """Take the lock on the output folder ``url`` (it must exist). False when this process already holds it or
    the lock of a folder containing it (nothing taken); raises ``OutputLocked`` naming the holder when another
    live run (or a run on another host) holds it."""
    if covering(url) is not None:
        return False
    fs, path = url_to_fs(str(url))
    file = join(path.rstrip("/"), OUTPUT_LOCK)
    me = Holder.me()
    for _ in range(5):  # a lock released or taken over between our look and our create: look again
        if _create(fs, file, me):
            with _guard:
                _held[_key(fs, path)] = _Held(fs, file, me)
            return True
        other = _read(fs, file)
        if other is None:
            continue  # gone between the create and the read (its run ended)
        if other.host != me.host:
            raise OutputLocked(
                f"output {url} is locked by a caprl run on host {other.host} (pid {other.pid}, since "
                f"{other.since}), which cannot be checked from {me.host}. Wait for that run to end or choose "
                f"another --output; if that run is gone, delete {file} and rerun"
            )
        if _alive(other.pid):  # this very process too: a lock it did not take here is another run's
            raise OutputLocked(
                f"output {url} is in use by another caprl run ({other.describe()}). Wait for it to end or "
                f"choose another --output; if that run is gone, delete {file} and rerun"
            )
        log.warning("output %s: the run that locked it (%s) is gone; taking its lock over", url, other.describe())
        _remove_if(fs, file, other)
    raise OutputLocked(
        f"could not take the lock {file}: other runs keep taking and releasing it. Make sure only "
        "one run writes this --output, then rerun"
    )


def release(url: str) -> None:
    """Remove the lock this process holds on ``url`` (only if the file still names this process)."""
    fs, path = url_to_fs(str(url))
    with _guard:
        held = _held.pop(_key(fs, path), None)
    if held is not None and held.holder.pid == os.getpid():  # a forked child never removes its parent's lock
        _remove_if(held.fs, held.file, held.holder)


def release_all() -> None:
    """Remove every lock this process holds (the ``atexit`` hook)."""
    with _guard:
        keys = list(_held)
    for key in keys:
        release(key)


atexit.register(release_all)


@contextlib.contextmanager
def output_lock_scope() -> Iterator[None]:
    """Release the output locks taken inside the block when it ends, however it ends (error, Ctrl-C)."""
    with _guard:
        before = set(_held)
    try:
        yield
    finally:
        with _guard:
            taken = [k for k in _held if k not in before]
        for key in taken:
            with contextlib.suppress(OSError):
                release(key)


# --------------------------------------------------------------------------- the file


def _create(fs: Any, file: str, me: Holder) -> bool:
    """Create the lock file naming ``me`` unless it exists; True when created. Atomic on a local disk (O_EXCL);
    on an object store a look-then-write, the best it offers."""
    data = me.to_json().encode()
    if isinstance(fs, LocalFileSystem):
        try:
            fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    if fs.exists(file):
        return False
    fs.pipe_file(file, data)
    return True


def _read(fs: Any, file: str) -> Holder | None:
    """What the lock file says; None when it is gone. An unreadable one is refused, naming the file."""
    try:
        text = fs.cat_file(file).decode()
    except FileNotFoundError:
        return None
    try:
        d = json.loads(text)
        return Holder(str(d["host"]), int(d["pid"]), str(d["since"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputLocked(
            f"the lock file {file} is unreadable ({text[:80]!r}): a run may be starting, or one was "
            "killed while it took the lock. If no run writes this folder, delete the file and rerun"
        ) from exc


def _remove_if(fs: Any, file: str, holder: Holder) -> None:
    """Delete ``file`` if it still names ``holder``, never a lock another run has taken since: on a local disk the
    file is first renamed aside (atomic), read there, and put back if it is not ``holder``'s."""
    if not isinstance(fs, LocalFileSystem):
        with contextlib.suppress(FileNotFoundError, OutputLocked):
            if _read(fs, file) == holder:
                fs.rm_file(file)
        return
    aside = f"{file}.{os.getpid()}-{threading.get_ident()}.released"
    try:
        os.rename(file, aside)
    except FileNotFoundError:
        return
    try:
        ours = _read(fs, aside) == holder
    except OutputLocked:
        ours = False
    if not ours:
        with contextlib.suppress(FileExistsError):
            os.link(aside, file)  # someone else's lock: back in place unless a newer one is there already
    os.unlink(aside)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
