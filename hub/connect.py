"""Open the registry the settings point at: the local one, or a remote hub's client."""

from __future__ import annotations

from .registry_backend import RegistryBackend
from .settings import Settings


def open_registry(settings: Settings) -> RegistryBackend:
    """A ``Registry`` (local) or ``RemoteRegistry`` (``settings.remote`` set); both have the
    same methods and raise the same errors."""
    if settings.remote:
        from .client import RemoteRegistry

        return RemoteRegistry(settings)
    from .registry import Registry

    return Registry(settings)
