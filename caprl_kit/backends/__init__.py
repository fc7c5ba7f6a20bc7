"""Generation back ends behind one contract (``Request`` -> ``Response``), selected by name in config.

Entries are lazy: naming ``vllm`` in a config imports nothing until the back end is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caprl_kit.registry import Registry

if TYPE_CHECKING:
    from caprl_kit.backends.base import Backend
    from caprl_kit.backends.config import BackendConfig

BACKENDS = Registry("backend")
BACKENDS.register("transformers", target="caprl_kit.backends.transformers_local:TransformersBackend")
BACKENDS.register("vllm", target="caprl_kit.backends.vllm_offline:VLLMBackend")
BACKENDS.register("openai", target="caprl_kit.backends.openai_http:OpenAIBackend")
BACKENDS.register("lexical", target="caprl_kit.backends.lexical:LexicalBackend")


def build_backend(cfg: BackendConfig) -> Backend:
    """The back end named by ``cfg.name`` (heavy imports happen here, not at config time): the command's pooled
    engine for this config when a command is running (``backends.pool``), else a new one the caller closes."""
    from caprl_kit.backends.pool import current_pool

    pool = current_pool()
    return pool.get(cfg) if pool is not None else BACKENDS.get(cfg.name)(cfg)


#: back end -> (module it imports, extra that installs it): checked before a run claims its output folder
REQUIRED_MODULES = {"transformers": ("transformers", "core"), "vllm": ("vllm", "vllm"), "openai": ("httpx", "core")}


def preflight_backend(cfg: BackendConfig, key: str = "backend") -> None:
    """Cheap checks a run makes before it writes anything: the back end exists, its package is installed, and its
    model resolves (``loading.resolve_model``: a local folder that holds a model with intact weights, or a hub id
    that is cached or downloadable now). Model loading itself reports deeper problems."""
    from caprl_kit._optional import is_available
    from caprl_kit.errors import MissingExtra

    BACKENDS.get(cfg.name)  # unknown name -> suggestions
    module, extra = REQUIRED_MODULES.get(cfg.name, (None, None))
    if module and not is_available(module):
        hint = (
            "pip install -e '.[vllm]' in its own environment (see docs/environments.md)"
            if extra == "vllm"
            else f"pip install {module}"
        )
        raise MissingExtra(f"{key}.name={cfg.name} needs the '{module}' package, which is not installed here: {hint}")
    if cfg.name in ("transformers", "vllm") and cfg.model:
        from caprl_kit.backends.loading import resolve_model

        resolve_model(cfg.model, key=f"{key}.model")
