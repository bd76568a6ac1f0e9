"""loramgr: a hub and registry for LoRA adapters, with LoraHub-style composition."""

from loramgr.hub.errors import LoramgrError
from loramgr.hub.records import AdapterVersion, Lineage
from loramgr.hub.settings import Settings
from loramgr.hub_api import Hub

__version__ = "0.1.0"
__all__ = ["Hub", "AdapterVersion", "Lineage", "LoramgrError", "Settings", "compose", "load_adapter", "merge"]


def __getattr__(name):
    # The composer pulls in torch and transformers; `import loramgr` for the hub alone stays light.
    if name in ("compose", "load_adapter", "merge"):
        from loramgr.composer import api

        return getattr(api, name)
    raise AttributeError(name)
