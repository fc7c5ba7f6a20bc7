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


def build_backend(cfg: "BackendConfig") -> "Backend":
    """Instantiate the back end named by ``cfg.name`` (heavy imports happen here, not at config time)."""
    return BACKENDS.get(cfg.name)(cfg)
