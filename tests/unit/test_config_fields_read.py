"""Every config field is read somewhere: a field that validates and then does nothing is a bug (the user sets it
and nothing changes). Walks every config model of the package and looks for a read of each field in the package's
own code (outside the config modules' field definitions): an attribute access ``.name``, a ``getattr(..., "name")``
or a key ``["name"]`` / ``"name":`` where configs travel as dicts (verl's and TRL's argument mappings)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import caprl_kit
from caprl_kit.config import ConfigModel

ROOT = Path(caprl_kit.__file__).parent
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

#: fields read by something other than an attribute access of their name, each with where and why
READ_ELSEWHERE = {
    "version": "JobConfig.version: the recipe loader checks it before validation (caprl_kit/config.py load path)",
    "description": "JobConfig.description: free text for the reader of the recipe, volatile by design",
}


def config_models() -> list[type[ConfigModel]]:
    for info in pkgutil.walk_packages(caprl_kit.__path__, "caprl_kit."):
        if info.name.startswith(("caprl_kit.cli", "caprl_kit.__main__")):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra that this environment lacks: its configs are elsewhere too
            continue
    seen: dict[str, type[ConfigModel]] = {}
    todo = list(ConfigModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("caprl_kit."):
            seen[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(seen.values())


def reads_in_package(models: list[type[ConfigModel]]) -> set[str]:
    """Names read in caprl_kit outside the config classes themselves (their validators and FieldIssues name their
    own fields): attribute loads, getattr/hasattr names, subscript keys, strings naming a field or a dotted path."""
    config_classes = {(m.__module__, m.__name__) for m in models}
    names: set[str] = set()
    for path in ROOT.rglob("*.py"):
        module = "caprl_kit." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(), str(path))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and (module, node.name) in config_classes:
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
                if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                    names.add(str(node.args[1].value))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
                # a key of a config travelling as a mapping, or a dotted config path ("runner.x") in a refusal table;
                # a name inside a message is not a read
                names.update(node.value.split("."))
    return names


def unread_fields(models: list[type[ConfigModel]], read: set[str]) -> list[str]:
    return sorted(
        f"{m.__module__}.{m.__qualname__}.{name}"
        for m in models
        for name in m.model_fields
        if name not in read and name not in READ_ELSEWHERE
    )


def test_every_config_field_is_read_by_some_code_path() -> None:
    models = config_models()
    assert len(models) >= 30, f"found only {len(models)} config models: the walk is broken"
    unread = unread_fields(models, reads_in_package(models))
    assert not unread, "config fields that no code reads (use them, or refuse them with a message): " + ", ".join(
        unread)


def test_the_walk_reports_a_field_that_nothing_reads() -> None:
    """The check itself can fail: a field named like nothing in the package is reported, a read one is not."""
    from pydantic import Field

    class Probe(ConfigModel):
        zzz_never_read_anywhere: int = Field(0)
        max_pixels: int = Field(1)  # read by io/media.py

    models = config_models()
    assert unread_fields([Probe], reads_in_package(models)) == [
        f"{Probe.__module__}.{Probe.__qualname__}.zzz_never_read_anywhere"
    ]
