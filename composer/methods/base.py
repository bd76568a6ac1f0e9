"""What a combine method is: a small class that declares its parameters and mixes one module.

A method sees one module at a time: the weights and factors of the adapters that have it
(adapters without the module contribute zero and are left out). It returns either factors
(``LoraFactors`` with scaling 1.0: an exact, factored result) or a dense ``(out, in)`` update
(methods that are not low-rank; the caller factors it back by a truncated SVD).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from loramgr.hub.errors import InvalidArgument

from ..lora import LoraFactors

# (weight, factors) of one adapter for one module; factors.scaling is that adapter's scaling.
Part = tuple[float, LoraFactors]


@dataclass(frozen=True)
class Param:
    """A method parameter: its name, default, and allowed values (inclusive bounds for numbers,
    ``choices`` for strings; booleans need neither)."""

    name: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def validate(self, value: Any, method: str) -> Any:
        """Return ``value`` in canonical form; raise ``InvalidArgument`` if it is not allowed."""
        where = f"{method}: parameter {self.name}"
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise InvalidArgument(f"{where} must be true or false, got {value!r}")
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise InvalidArgument(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(f"{where} must be a number, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidArgument(f"{where} must be in [{self.low}, {self.high}], got {value!r}")
        return float(value)


class CombineMethod:
    """Base class of combine methods; subclasses set ``name``, ``params`` and ``mix``.

    ``dense`` says whether ``mix`` returns a dense update (then the result is factored back by a
    truncated SVD and carries a truncation error) or exact factors.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    dense: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def __init__(self, **values: Any):
        """Fill in defaults and validate; raises ``InvalidArgument`` for unknown or bad values."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise InvalidArgument(f"{self.name}: unknown parameter(s) {', '.join(unknown)} (allowed: {allowed})")
        self.values = {name: p.validate(values.get(name, p.default), self.name) for name, p in known.items()}

    def mix(self, module: str, parts: Sequence[Part], *, seed: int) -> LoraFactors | torch.Tensor:
        """Combine one module: factors with scaling 1.0, or a dense ``(out, in)`` update."""
        raise NotImplementedError


def dense_update(factors: LoraFactors) -> torch.Tensor:
    """``scaling * B @ A`` in the factors' dtype: one module's dense update."""
    return factors.scaling * (factors.B @ factors.A)


def module_generator(seed: int, module: str) -> torch.Generator:
    """A generator seeded by (seed, module path), so a module's random draws do not depend on
    which other modules exist or in which order they are processed."""
    mixed = (int(seed) * 0x9E3779B1 + zlib.crc32(module.encode())) % (2**63)
    return torch.Generator().manual_seed(mixed)
