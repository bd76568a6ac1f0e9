"""The composer's public functions, re-exported as ``loramgr.compose``, ``loramgr.merge`` and
``loramgr.load_adapter``.

Both accept ``hub=`` (a ``loramgr.Hub``, or a registry) for refs and registration; without it
they open the registry that ``LORAMGR_*`` configures.
"""

from __future__ import annotations

from pathlib import Path

from loramgr.hub.connect import open_registry
from loramgr.hub.settings import Settings

from . import compose as _compose
from . import merge as _merge


def _registry(hub):
    if hub is None:
        return open_registry(Settings.load())
    return getattr(hub, "backend", hub)


def compose(model=None, candidates=None, examples=_compose.REGISTERED, *, hub=None, **kwargs) -> _compose.Composition:
    """See ``loramgr.composer.compose.compose``; ``hub`` resolves refs and tasks, and registers ``name``."""
    named = list(candidates or []) + list(kwargs.get("adapters") or [])
    needs_hub = (kwargs.get("name") or kwargs.get("tasks") is not None or kwargs.get("all_adapters")
                 or (isinstance(examples, str) and examples == _compose.REGISTERED)
                 or any(not isinstance(c, _compose.Candidate) and not Path(str(c)).is_dir() for c in named))
    registry = _registry(hub) if needs_hub or hub is not None else None
    return _compose.compose(model, candidates, examples, registry=registry, **kwargs)


def load_adapter(base_model, adapter, *, hub=None, **options):
    """A ``peft.PeftModel``: ``base_model`` with ``adapter`` (a folder or a hub ref) applied."""
    registry = None if Path(str(adapter)).is_dir() else _registry(hub)
    return _compose.load_adapter(base_model, adapter, registry=registry, **options)


def merge(adapters, weights, *, hub=None, **options) -> _merge.MergeResult:
    """See ``loramgr.composer.merge.merge``; ``hub`` resolves refs and registers ``name``."""
    needs_hub = options.get("name") or any(not Path(str(a)).is_dir() for a in adapters
                                           if not isinstance(a, _compose.Candidate))
    registry = _registry(hub) if needs_hub or hub is not None else None
    return _merge.merge(adapters, weights, registry=registry, **options)
