"""Config loading: YAML + ``include:`` + dotted overrides -> typed pydantic models, all errors at once.

Loading order (style guide §8.3): ``yaml.safe_load`` -> ``include:`` (paths relative to the including file,
later keys win) -> ``key.path=value`` overrides (values parsed as YAML scalars, ``~key.path`` deletes) ->
validation into the command's model with ``extra="forbid"``. Every problem is reported in one
``ConfigError``, each with its dotted key path and, for unknown keys or registry names, a suggestion.
"""

from __future__ import annotations

import copy
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.registry import Registry, suggest

PIPELINE_SUFFIXES = (".yaml", ".yml")


class ConfigModel(BaseModel):
    """Base of every config block: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


class JobConfig(ConfigModel):
    """Base of the four command configs. ``kind`` names the command, ``version`` the recipe format."""

    #: fields that do not change what a run produces; left out of the config hash used to refuse resumes
    volatile_fields: ClassVar[frozenset[str]] = frozenset({"output_dir", "description"})

    version: int = Field(1, description="Recipe format version")
    description: str = Field("", description="Free text describing the recipe")
    output_dir: str | None = Field(None, description="Where the run writes (any fsspec URL); --output sets it")

    def fingerprint(self) -> str:
        """The resume identity of the whole config (``config_hash``)."""
        return config_hash(config=self)


# --------------------------------------------------------------------------- resume identity

#: ``json_schema_extra`` of a field that does not change what a run produces (where the engine runs, how many
#: requests are in flight, timeouts, batch sizes, export switches): left out of the resume identity
VOLATILE = {"volatile": True}
#: ``json_schema_extra`` of a field that names a registered prompt: its text is part of the resume identity
PROMPT_NAME = {"prompt": True}


def volatile(*args: Any, **kwargs: Any) -> Any:
    """``Field(...)`` of a field that does not change a run's outputs (see ``identity``)."""
    return Field(*args, json_schema_extra={**kwargs.pop("json_schema_extra", {}), **VOLATILE}, **kwargs)


def prompt_field(*args: Any, **kwargs: Any) -> Any:
    """``Field(...)`` of a field naming a registered prompt: its text is part of the resume identity."""
    return Field(*args, json_schema_extra={**kwargs.pop("json_schema_extra", {}), **PROMPT_NAME}, **kwargs)


def _marked(field: Any, mark: dict[str, bool]) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and all(extra.get(k) == v for k, v in mark.items())


def identity(value: Any) -> Any:
    """The part of a config value a run's outputs depend on, as JSON data: every field except the volatile ones
    (marked ``VOLATILE`` on the field, or a command's ``volatile_fields``), and each registered prompt named in it
    with its text, so an edited prompt text is a changed config."""
    from pydantic_core import to_jsonable_python

    if isinstance(value, BaseModel):
        skip: frozenset[str] = getattr(value, "volatile_fields", frozenset())
        out: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            if name in skip or _marked(field, VOLATILE):
                continue
            item = getattr(value, name)
            out[name] = _prompt(item) if _marked(field, PROMPT_NAME) else identity(item)
        return out
    if isinstance(value, (list, tuple)):
        return [identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): identity(v) for k, v in value.items()}
    return to_jsonable_python(value)


def _prompt(name: Any) -> Any:
    from caprl_kit.prompts import PROMPTS

    return {"name": name, "text": PROMPTS.get(name)} if isinstance(name, str) and name in PROMPTS else name


def config_hash(**parts: Any) -> str:
    """The one resume rule: sha256 over the ``identity`` of the named parts a stage's output depends on. A stage
    whose hash changed is refused on resume; one whose only changes are volatile resumes."""
    data = {k: identity(v) for k, v in parts.items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class FieldIssue(ValueError):
    """Raised by a cross-field ``model_validator`` to report its problem at a key path below the model (e.g.
    ``trl.per_device_batch_size``), so the ``ConfigIssue`` names the key to change like every other config error."""

    def __init__(self, path: str, message: str, hint: str | None = None):
        self.path, self.message, self.hint = path, message, hint
        super().__init__(f"{path}: {message}")


class FieldIssues(ValueError):
    """Several ``FieldIssue`` s found by one cross-field ``model_validator``: each becomes its own ``ConfigIssue``, so
    a config that sets three ignored keys hears about all three at once."""

    def __init__(self, issues: list[FieldIssue]):
        self.issues = list(issues)
        super().__init__("; ".join(str(i) for i in self.issues))


def raise_issues(issues: list[FieldIssue]) -> None:
    """Raise what a validator collected: nothing, the one ``FieldIssue``, or all of them as ``FieldIssues``."""
    if len(issues) == 1:
        raise issues[0]
    if issues:
        raise FieldIssues(issues)


# --------------------------------------------------------------------------- registry-checked fields


def registry_name(registry: Registry):
    """A pydantic ``AfterValidator`` that accepts only names known to ``registry`` (with a suggestion)."""

    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(registry.unknown_message(name))
        return name

    return check


# --------------------------------------------------------------------------- locating pipelines


def pipelines_root() -> Path:
    """Built-in recipes: ``caprl_kit/pipelines`` in a wheel, the repository's ``pipelines/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "pipelines", here.parent / "pipelines"):
        if candidate.is_dir():
            return candidate
    return here / "pipelines"


def builtin_pipelines() -> list[str]:
    root = pipelines_root()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def pipeline_purpose(name: str) -> str:
    """A recipe's one-line description: the first sentence of its opening comment (before ``Prerequisites:``)."""
    words: list[str] = []
    for line in (pipelines_root() / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if text.startswith(("Prerequisites:", "Run:", "Override:")):
            break
        words.append(text)
    first = " ".join(words)
    cut = first.find(". ")  # the first sentence; "spec §4." style ends keep their dot
    return first[: cut + 1] if cut >= 0 else first


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or a built-in name such as ``annotate/caption_images_tiny``."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml").removesuffix(".yml")
    builtin = pipelines_root() / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_pipelines()
    hint = suggest(name, names)
    raise ConfigError(
        [
            ConfigIssue(
                "--config",
                f"'{name_or_path}' is neither a file nor a built-in pipeline",
                f"did you mean '{hint}'?" if hint else f"built-ins: {', '.join(names)}",
            )
        ]
    )


# --------------------------------------------------------------------------- YAML + include + overrides


def load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and merge its ``include:`` files first (later keys win, dicts merge deeply)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError([ConfigIssue("include", f"include cycle: {chain}")], source=str(path))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("include", f"file not found: {path}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("<yaml>", f"not valid YAML: {exc}")], source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("<root>", "the top level must be a mapping")], source=str(path))
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = deep_merge(merged, load_yaml(path.parent / inc, (*_seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` (YAML-parsed value) and ``~a.b`` (delete) to a copy of ``data``."""
    data = copy.deepcopy(data)
    issues: list[ConfigIssue] = []
    for item in overrides:
        if item.startswith("~"):
            key, value, delete = item[1:], None, True
        elif "=" in item:
            key, raw = item.split("=", 1)
            delete = False
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
        else:
            issues.append(ConfigIssue(item, "overrides look like key.path=value or ~key.path"))
            continue
        parts = key.strip().split(".")
        if not all(parts):
            issues.append(ConfigIssue(key, "empty segment in key path"))
            continue
        node: Any = data
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {}) if not delete else node.get(part)
            else:
                node = None
            if node is None:
                break
        last = parts[-1]
        if node is None or not isinstance(node, (dict, list)):
            issues.append(ConfigIssue(key, "cannot override: a parent key is not a mapping"))
        elif delete:
            if isinstance(node, dict) and last in node:
                del node[last]
            else:
                issues.append(ConfigIssue(key, "cannot delete: key not present"))
        elif isinstance(node, list):
            if last.isdigit() and int(last) < len(node):
                node[int(last)] = value
            else:
                issues.append(ConfigIssue(key, f"list index out of range (length {len(node)})"))
        else:
            node[last] = value
    if issues:
        raise ConfigError(issues, source="overrides")
    return data


# --------------------------------------------------------------------------- validation


def validate(model: type[BaseModel], data: dict[str, Any], source: str | None = None) -> Any:
    """Validate ``data`` into ``model``; on failure raise one ``ConfigError`` with every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([i for err in exc.errors() for i in _issues(model, err)], source=source) from None


def _issues(model: type[BaseModel], err: Any) -> list[ConfigIssue]:
    """One pydantic error -> its ``ConfigIssue`` (several when a validator raised ``FieldIssues``)."""
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, FieldIssues):
        loc = [str(p) for p in err["loc"] if not _is_union_tag(model, p)]
        return [ConfigIssue(".".join([*loc, i.path]), i.message, i.hint) for i in raised.issues]
    return [_issue(model, err)]


def _issue(model: type[BaseModel], err: Any) -> ConfigIssue:
    loc = [str(p) for p in err["loc"] if not _is_union_tag(model, p)]
    path = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(model, err["loc"][:-1])
        fields = sorted(parent.model_fields) if parent else []
        close = suggest(str(err["loc"][-1]), fields)
        hint = f"did you mean '{close}'?" if close else (f"allowed keys: {', '.join(fields)}" if fields else None)
        return ConfigIssue(path, "unknown key", hint)
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, FieldIssue):
        return ConfigIssue(".".join([*loc, raised.path]), raised.message, raised.hint)
    msg = err["msg"].removeprefix("Value error, ")
    if kind not in ("missing", "value_error") and "input" in err:
        msg += f" (got {err['input']!r})"
    return ConfigIssue(path, msg)


def _is_union_tag(model: type[BaseModel], part: Any) -> bool:
    # pydantic inserts the member type name into loc for unions ("function-after[...]", "int", ...)
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "list", "dict"})


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that sits at ``loc`` inside ``model`` (through Optional, list and dict)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) or (isinstance(current, type) and not issubclass(current, BaseModel)):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            continue
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, __import__("types").UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = models[0] if models else members[0]
        elif origin in (list, tuple, set):
            tp = typing.get_args(tp)[0]
        else:
            return tp


# --------------------------------------------------------------------------- public entry points


def load_config(
    name_or_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    kind: str | None = None,
    values: dict[str, Any] | None = None,
) -> JobConfig:
    """Load a pipeline YAML (built-in name or path) with overrides into its command's config model.

    ``kind`` (``curate``/``train``/``annotate``/``eval``) is taken from the YAML's ``kind:`` key when not
    given; a mismatch is an error. ``values`` sets dotted keys to typed values as they are (the CLI's ``--output``,
    ``--host``, ``--port``: a folder named ``2024`` or ``runs/x #1`` is not YAML).
    """
    from caprl_kit.commands import COMMANDS

    path = resolve_config_path(name_or_path)
    data = apply_overrides(load_yaml(path), overrides)
    for dotted, value in (values or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    declared = data.get("kind")
    kind = kind or declared
    if kind is None:
        raise ConfigError([ConfigIssue("kind", "missing; set kind: curate|train|annotate|eval")], source=str(path))
    if declared is not None and declared != kind:
        raise ConfigError(
            [ConfigIssue("kind", f"this file is a '{declared}' pipeline, not '{kind}'")], source=str(path)
        )
    if kind not in COMMANDS:
        raise ConfigError([ConfigIssue("kind", COMMANDS.unknown_message(kind))], source=str(path))
    data["kind"] = kind
    return validate(COMMANDS.get(kind), data, source=str(path))


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML: the single record of what ran (``config.resolved.yaml``)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
