"""Named registries of pluggable parts, with lazy ``module:attr`` entries and "did you mean" errors.

>>> r = Registry("answerer")
>>> r.register("json_loads", target="json:loads")
>>> r.get("json_loads")('{"a": 1}')
{'a': 1}
>>> r.suggest("json_lods")
'json_loads'
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from caprl_kit.errors import CaprlError


class UnknownName(CaprlError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def suggest(name: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to ``name``, or None when nothing is close."""
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return found[0] if found else None


class _Lazy(str):
    """A ``"module:attr"`` target, imported on first use (plain strings are ordinary registered values)."""


class Registry:
    """Maps names to objects. Entries are objects or ``"module:attr"`` strings imported on first use.

    ``file:path/to/code.py:attr`` loads user code from a file without touching ``sys.path``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None, *, target: str | None = None) -> Any:
        """Register ``obj`` or a lazy ``"module:attr"`` target; without either, act as a decorator."""
        if obj is not None and target is not None:
            raise ValueError("pass either obj or target, not both")
        if obj is None and target is None:

            def decorator(fn: Any) -> Any:
                self._entries[name] = fn
                return fn

            return decorator
        self._entries[name] = _Lazy(target) if target is not None else obj
        return obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name.startswith("file:")

    def suggest(self, name: str) -> str | None:
        return suggest(name, self.names())

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind} '{name}'"
        close = self.suggest(name)
        if close:
            msg += f"; did you mean '{close}'?"
        return msg + f" Available: {', '.join(self.names())}"

    def get(self, name: str) -> Any:
        if name.startswith("file:"):
            return _load_from_file(name[len("file:") :])
        if name not in self._entries:
            raise UnknownName(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry


def _load_from_file(spec: str) -> Any:
    path, sep, attr = spec.rpartition(":")
    if not sep or not path:
        raise CaprlError(f"file entries look like 'file:path/to/code.py:name', got 'file:{spec}'")
    file = Path(path).expanduser()
    if not file.is_file():
        raise CaprlError(f"file:{spec}: {file} does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"caprl_user_{file.stem}", file)
    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]  # spec_from_file_location found the file
    mod_spec.loader.exec_module(module)  # type: ignore[union-attr]  # a file spec always has a loader
    if not hasattr(module, attr):
        raise CaprlError(f"file:{spec}: {file} defines no '{attr}'")
    return getattr(module, attr)
