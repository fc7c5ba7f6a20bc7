"""Model resolution shared by every loader (the transformers and vLLM back ends, the trainers, the answerer).

Each check runs before the heavy load and fails with one ``BackendError`` that names the model (and, where the
caller knows it, the config key) and says what to do: a missing local directory, a folder that is not a model,
truncated or corrupt weights, a hub id that is not cached while offline, a text-only model where a captioner is
needed, a device that is not there. Errors the loaders still raise (``from_pretrained`` on a model we could not
pre-check) are wrapped by ``load`` into the same kind of message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from caprl_kit.errors import BackendError, CaprlError
from caprl_kit.log import get_logger

log = get_logger(__name__)
T = TypeVar("T")

#: a Hugging Face hub id: ``name`` or ``org/name`` (anything else that does not exist is a missing path)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
VLM_EXAMPLE = "e.g. Qwen/Qwen2.5-VL-3B-Instruct, or the captioner/ that `caprl models tiny` builds"


def _name(model: str, key: str | None) -> str:
    return f"{key} '{model}'" if key else f"model '{model}'"


def _set(key: str | None) -> str:
    return f"set {key}" if key else "set the back end's model"


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    truthy = {"1", "true", "yes", "on"}
    if any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(model: str, *, key: str | None = None) -> str:
    """Check that ``model`` (a local directory or a hub id) can be loaded now, before any weights are read.

    A local directory must hold a model (``config.json`` and intact weights). A path that does not exist is an
    error. A hub id is accepted when it is in the local cache (whose weights are checked too) or when the hub is
    online (``from_pretrained`` downloads it); offline and uncached it is an error saying how to get it.
    """
    path = Path(model).expanduser()
    if path.exists():
        check_model_dir(path, model, key)
        return str(path)
    if not HUB_ID.match(model):
        raise BackendError(
            f"{_name(model, key)} does not exist; {_set(key)} to a local model directory or a Hugging Face hub id"
        )
    cached = _cached_snapshot(model)
    if cached is not None:
        check_model_dir(cached, model, key)
        return model
    if hub_offline():
        raise BackendError(
            f"{_name(model, key)} is not a local directory and not in the Hugging Face cache, and the hub is "
            f"offline (HF_HUB_OFFLINE=1): download it first (`huggingface-cli download {model}` on a machine with "
            f"network, then copy the cache), or {_set(key)} to a local model directory"
        )
    return model


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub client rejects: not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def check_model_dir(path: Path, model: str, key: str | None = None) -> None:
    """A local model directory: ``config.json`` present, weights present and not truncated."""
    where = _name(model, key)
    if not path.is_dir():
        raise BackendError(
            f"{where} is a file, not a model directory; {_set(key)} to the folder holding config.json and the weights"
        )
    if not (path / "config.json").is_file():
        raise BackendError(
            f"{where} has no config.json: it is not a Hugging Face model directory (or an "
            f"unfinished download/build); {_set(key)} to a complete model directory"
        )
    weights = sorted({p for g in WEIGHT_GLOBS for p in path.glob(g)})
    if not weights:
        raise BackendError(
            f"{where} holds no weights (model.safetensors or pytorch_model.bin); download or build the model again"
        )
    for index in (p for p in weights if p.name.endswith(".index.json")):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{where}: {index.name} is corrupt ({exc}); download the model again") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise BackendError(
                f"{where}: weight shard(s) {', '.join(missing)} listed in {index.name} are "
                "missing; download the model again"
            )
    for file in (p for p in weights if p.suffix == ".safetensors"):
        problem = safetensors_problem(file)
        if problem:
            raise BackendError(
                f"{where}: {file.name} is {problem}; the download or save was interrupted: "
                "download or build the model again"
            )


def safetensors_problem(file: Path) -> str | None:
    """Why a ``.safetensors`` file cannot be loaded (truncated, bad header), from its header alone; None if fine."""
    size = file.stat().st_size
    with file.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes)"
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            return f"truncated ({size} bytes, the header alone needs {8 + n})"
        try:
            header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "corrupt (unreadable header)"
    if 8 + n + end > size:
        return f"truncated ({size} of {8 + n + end} bytes)"
    return None


def load(what: str, model: str, loader: Callable[..., T], /, *args: Any, key: str | None = None, **kwargs: Any) -> T:
    """``loader(*args, **kwargs)`` (a ``from_pretrained``), with any failure turned into one ``BackendError``
    naming ``model`` and what was being loaded."""
    try:
        return loader(*args, **kwargs)
    except CaprlError:
        raise
    except Exception as exc:  # the loaders raise OSError, ValueError, RuntimeError, KeyError, ...
        log.debug("loading the %s of %s failed", what, model, exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackendError(
            f"could not load the {what} of {_name(model, key)}: {type(exc).__name__}: {first[:300]}; "
            "check that it is a complete Hugging Face model directory or hub id (-vv logs the full error)"
        ) from exc


def load_hf_config(model: str, *, key: str | None = None, trust_remote_code: bool = False) -> Any:
    """``resolve_model`` + ``AutoConfig.from_pretrained`` with errors as ``BackendError``."""
    from transformers import AutoConfig

    model = resolve_model(model, key=key)
    return load("config", model, AutoConfig.from_pretrained, model, key=key, trust_remote_code=trust_remote_code)


def is_vision_language(hf_config: Any) -> bool:
    return hasattr(hf_config, "vision_config")


def architecture(hf_config: Any) -> str:
    archs = getattr(hf_config, "architectures", None) or []
    return archs[0] if archs else type(hf_config).__name__


def text_only_error(model: str, hf_config: Any, key: str | None = None) -> BackendError:
    return BackendError(
        f"{_name(model, key)} is a text-only model ({architecture(hf_config)}); a captioner needs a "
        f"vision-language model ({VLM_EXAMPLE})"
    )


def require_vision_language(model: str, hf_config: Any, key: str | None = None) -> None:
    if not is_vision_language(hf_config):
        raise text_only_error(model, hf_config, key)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu; an explicit device must exist on this machine."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= n:
            raise BackendError(
                f"device '{device}' is not available: this machine has {n} CUDA GPU(s); set the "
                "back end's device to auto or cpu" + (f" (or cuda:0..cuda:{n - 1})" if n else "")
            )
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BackendError("device 'mps' is not available on this machine; set the back end's device to auto or cpu")
    return device
