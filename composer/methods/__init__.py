"""The combine methods, by name: ``get(name)`` is the only lookup.

A plain dict, filled here explicitly (no registration by import side effects).
"""

from __future__ import annotations

from loramgr.hub.errors import InvalidArgument

from .base import CombineMethod, Param
from .dare import Dare, DareTies
from .delta import Delta, Linear
from .lorahub import LoraHub
from .ties import Ties

METHODS: dict[str, type[CombineMethod]] = {
    cls.name: cls for cls in (Delta, Linear, LoraHub, Ties, Dare, DareTies)
}


def get(name: str) -> type[CombineMethod]:
    """The method class called ``name``; raises ``InvalidArgument`` listing the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise InvalidArgument(f"unknown combine method {name!r} (choose from {', '.join(names())})") from None


def names() -> list[str]:
    """Every method name, in registry order."""
    return list(METHODS)


__all__ = ["CombineMethod", "Param", "get", "names"]
