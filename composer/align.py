"""Aligning adapters by module, and ``combine``: the algebra's entry point.

``combine`` checks that the adapters fit together, hands each module (the union of all the
adapters' modules) to a combine method from ``methods``, re-compresses or factors back where
asked, and pads every module to one rank so the result is an ordinary LoRA with scaling 1.0
everywhere (no rank_pattern / alpha_pattern needed, which vLLM would ignore anyway).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Mapping, Sequence

import torch

from loramgr.hub.errors import InvalidArgument

from . import methods
from .errors import CompositionError, IncompatibleAdapters, UnsupportedAdapter
from .lora import LoraFactors, LoraWeights
from .recompress import recompress, truncated_svd


@dataclass(frozen=True)
class CombinedLora:
    """The result of ``combine``: one LoRA with scaling 1.0 and one rank for every module.

    ``truncation_error`` is the relative Frobenius error over all modules,
    ``sqrt(sum of discarded energy / sum of total energy)``, or ``None`` when the result is
    exact; ``module_errors`` holds the per-module relative errors where something was cut.
    """

    modules: dict[str, LoraFactors]
    rank: int
    method: str
    weights: tuple[float, ...]
    sources: tuple[str, ...]
    base_model: str | None
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    truncation_error: float | None = None
    module_errors: dict[str, float] = field(default_factory=dict)
    module_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)  # where they override weights

    def delta(self, module: str) -> torch.Tensor:
        """The dense update of one module (float64); for tests and small shapes."""
        return self.modules[module].delta()


def check_compatible(adapters: Sequence[LoraWeights]) -> None:
    """Raise if the adapters cannot be combined at all.

    ``IncompatibleAdapters``: different base models (both named), or one module with different
    input/output sizes in two adapters. ``UnsupportedAdapter``: a DoRA adapter (``load_lora``
    already refuses DoRA, embeddings and modules_to_save when reading from disk; this catches
    ``LoraWeights`` built otherwise).
    """
    for adapter in adapters:
        if adapter.config.get("use_dora"):
            raise UnsupportedAdapter(f"{adapter.label}: DoRA adapters cannot be combined (use_dora=true)")
    # An adapter without base_model_name_or_path cannot be checked; it is taken on trust.
    named = [(a.label, a.base_model) for a in adapters if a.base_model]
    for label, base in named[1:]:
        if base != named[0][1]:
            raise IncompatibleAdapters(
                f"adapters are for different base models: {named[0][0]} is for {named[0][1]}, "
                f"{label} is for {base}",
                bases=[named[0][1], base],
            )
    shapes: dict[str, tuple[str, int, int]] = {}
    for adapter in adapters:
        for module, f in adapter.modules.items():
            io = (f.A.shape[1], f.B.shape[0])
            seen = shapes.setdefault(module, (adapter.label, *io))
            if seen[1:] != io:
                raise IncompatibleAdapters(
                    f"module {module} maps {seen[1]} -> {seen[2]} features in {seen[0]} but "
                    f"{io[0]} -> {io[1]} in {adapter.label}; are they for the same base model?",
                    module=module,
                )


def align(adapters: Sequence[LoraWeights], weights: Sequence[float],
          module_weights: Mapping[str, Sequence[float]] | None = None) -> dict[str, list[tuple[float, LoraFactors]]]:
    """Group ``(weight, factors)`` by module over the union of the adapters' modules, sorted by
    module path; an adapter without a module is simply absent from its list (it contributes
    zero). Factors are cast to one floating dtype (at least float32). ``module_weights`` gives
    some modules their own weights (one per adapter), e.g. per layer block."""
    dtype = reduce(torch.promote_types, (f.A.dtype for a in adapters for f in a.modules.values()), torch.float32)
    module_weights = module_weights or {}
    aligned: dict[str, list[tuple[float, LoraFactors]]] = {}
    for i, (adapter, weight) in enumerate(zip(adapters, weights)):
        for module, f in adapter.modules.items():
            if f.A.dtype != dtype or f.B.dtype != dtype:
                f = LoraFactors(f.A.to(dtype), f.B.to(dtype), f.scaling)
            own = module_weights.get(module)
            aligned.setdefault(module, []).append((weight if own is None else own[i], f))
    return dict(sorted(aligned.items()))


def combine(adapters: Sequence[LoraWeights], weights: Sequence[float], *, method: str = "delta",
            rank: int | None = None, seed: int = 0, module_weights: Mapping[str, Sequence[float]] | None = None,
            **params: Any) -> CombinedLora:
    """Combine adapters with ``weights`` by ``method`` (see ``methods.names()``).

    ``rank``: for exact methods (``delta``/``linear``, ``lorahub``) an optional re-compression to
    at most ``rank`` (modules already at or below it stay exact); for dense methods (``ties``,
    ``dare``, ``dare_ties``) the rank of the truncated SVD, by default the sum of the input ranks
    of each module. ``seed`` drives random methods; ``params`` are the method's parameters.
    ``module_weights`` maps module paths to their own weights (one per adapter), overriding
    ``weights`` there (finer weights, e.g. per layer block, from the gradient search).

    Raises ``InvalidArgument`` (bad weights, rank, seed, method or parameters),
    ``IncompatibleAdapters`` (different base models; unequal shapes for ``lorahub``),
    ``UnsupportedAdapter`` (DoRA) and ``CompositionError`` (no modules at all).
    """
    chosen = methods.get(method)(**params)
    weights = _check_arguments(adapters, weights, rank, seed)
    module_weights = {module: _check_arguments(adapters, own, rank, seed)
                      for module, own in (module_weights or {}).items()}
    check_compatible(adapters)
    aligned = align(adapters, weights, module_weights)
    if not aligned:
        raise CompositionError("the adapters have no LoRA modules to combine")

    modules: dict[str, LoraFactors] = {}
    errors: dict[str, float] = {}
    discarded = total = 0.0
    for module, parts in aligned.items():
        mixed = chosen.mix(module, parts, seed=seed)
        if isinstance(mixed, torch.Tensor):
            target = rank or sum(f.rank for _, f in parts)
            A, B, error = truncated_svd(mixed, target)
            energy = float(mixed.double().square().sum())
        elif rank is not None and rank < mixed.rank:
            A, B, error = recompress(mixed.A, mixed.B, rank)
            energy = factored_energy(mixed.A, mixed.B)
        else:
            modules[module] = mixed
            continue
        modules[module] = LoraFactors(A, B, 1.0)
        errors[module] = error
        discarded += error**2 * energy
        total += energy

    uniform = max(f.rank for f in modules.values())
    truncation_error = (math.sqrt(discarded / total) if total > 0 else 0.0) if errors else None
    return CombinedLora(
        modules={m: pad_rank(f, uniform) for m, f in modules.items()},
        rank=uniform,
        method=method,
        weights=tuple(weights),
        sources=tuple(a.label for a in adapters),
        base_model=next((a.base_model for a in adapters if a.base_model), None),
        seed=seed,
        params=dict(chosen.values),
        truncation_error=truncation_error,
        module_errors=errors,
        module_weights={module: tuple(own) for module, own in sorted(module_weights.items())},
    )


def factored_energy(A: torch.Tensor, B: torch.Tensor) -> float:
    """``||B @ A||_F^2`` from the factors: ``sum((B^T B) * (A A^T))``, R x R work only."""
    A, B = A.double(), B.double()
    return float(((B.T @ B) * (A @ A.T)).sum())


def pad_rank(factors: LoraFactors, rank: int) -> LoraFactors:
    """Pad to ``rank`` with zero rows of A and zero columns of B; the update is unchanged."""
    missing = rank - factors.rank
    if missing == 0:
        return factors
    A = torch.cat([factors.A, factors.A.new_zeros(missing, factors.A.shape[1])], dim=0)
    B = torch.cat([factors.B, factors.B.new_zeros(factors.B.shape[0], missing)], dim=1)
    return LoraFactors(A, B, factors.scaling)


def _check_arguments(adapters, weights, rank, seed) -> list[float]:
    if not adapters:
        raise InvalidArgument("combine needs at least one adapter")
    weights = list(weights)
    if len(weights) != len(adapters):
        raise InvalidArgument(f"got {len(weights)} weights for {len(adapters)} adapters")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
            raise InvalidArgument(f"weights must be finite numbers, got {w!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise InvalidArgument(f"rank must be a positive integer, got {rank!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgument(f"seed must be an integer, got {seed!r}")
    return [float(w) for w in weights]
