"""TEST-ONLY STAND-IN for the few names of vLLM the loramgr plugin imports. It is not vLLM.

vLLM cannot be installed or run on these CPU-only machines, so the resolver is tested against
vLLM's interface as its sources define it (vllm/lora/resolver.py, vllm/lora/request.py):

- ``LoRAResolver``: an ABC with ``async def resolve_lora(self, base_model_name: str,
  lora_name: str) -> Optional[LoRARequest]``;
- ``LoRAResolverRegistry``: an instance of ``_LoRAResolverRegistry`` with
  ``register_resolver(name, resolver)``, ``get_supported_resolvers()``, ``get_resolver(name)``;
- ``LoRARequest(lora_name, lora_int_id, lora_path="", base_model_name=None,
  tensorizer_config_dict=None)``, refusing an id below 1 and an empty path (a ``msgspec.Struct``
  in vLLM, compared by ``lora_name``; a dataclass here).

``install(monkeypatch)`` puts these under ``vllm.lora.request`` / ``vllm.lora.resolver`` in
``sys.modules`` for one test; when the real vLLM is importable, it is used instead.
"""

from __future__ import annotations

import sys
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None
    tensorizer_config_dict: dict | None = None

    def __post_init__(self):  # vLLM's own checks
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        if not self.lora_path:
            raise ValueError("lora_path cannot be empty")


class LoRAResolver(ABC):
    @abstractmethod
    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        ...


@dataclass
class _LoRAResolverRegistry:
    resolvers: dict[str, LoRAResolver] = field(default_factory=dict)

    def get_supported_resolvers(self):
        return self.resolvers.keys()

    def register_resolver(self, resolver_name: str, resolver: LoRAResolver) -> None:
        self.resolvers[resolver_name] = resolver

    def get_resolver(self, resolver_name: str) -> LoRAResolver:
        return self.resolvers[resolver_name]


def real_vllm_available() -> bool:
    try:
        import vllm.lora.resolver  # noqa: F401
    except ImportError:
        return False
    return True


def install(monkeypatch) -> types.ModuleType:
    """Make ``import vllm.lora.resolver`` / ``vllm.lora.request`` give this stand-in (unless the
    real vLLM is importable); return the resolver module, whose ``LoRAResolverRegistry`` is fresh."""
    if real_vllm_available():
        import vllm.lora.resolver as real

        return real
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    resolver = types.ModuleType("vllm.lora.resolver")
    resolver.LoRAResolver, resolver.LoRAResolverRegistry = LoRAResolver, _LoRAResolverRegistry()
    vllm, lora = types.ModuleType("vllm"), types.ModuleType("vllm.lora")
    vllm.lora, lora.request, lora.resolver = lora, request, resolver
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request),
                         ("vllm.lora.resolver", resolver)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "loramgr.integrations.vllm", raising=False)
    return resolver
