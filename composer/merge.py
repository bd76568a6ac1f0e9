"""``merge``: combine adapters with weights the user already knows, by a named method.

The methods are ``composer.methods`` (linear/delta, ties, dare, dare_ties, lorahub), with the
parameters each declares; the algebra is ``align.combine``. The result is one ordinary PEFT
adapter, written to a folder and/or registered as a ``composed`` version whose lineage has mode
``merge:<method>``, the weights, the method's parameters and, where the result was factored back
to a rank (dense methods, or ``rank``), the relative truncation error.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from loramgr.hub.records import AdapterVersion, Lineage, SourceWeight
from loramgr.hub.refs import AdapterName

from . import methods
from .align import CombinedLora, combine
from .candidates import Candidate, candidates_from_refs
from .errors import CompositionError
from .export import export_adapter
from .lora import load_lora

MODE_PREFIX = "merge:"


@dataclass(frozen=True)
class MergeResult:
    """What ``merge`` made: the combined LoRA, its sources and weights, where it went."""

    sources: list[Candidate]
    weights: tuple[float, ...]
    method: str
    params: dict[str, Any]
    seed: int
    combined: CombinedLora
    path: Path | None = None
    version: AdapterVersion | None = None

    @property
    def mode(self) -> str:
        return MODE_PREFIX + self.method

    def details(self) -> dict:
        combined = self.combined
        return {"params": dict(self.params), "rank": combined.rank, "truncation_error": combined.truncation_error,
                "worst_module_error": max(combined.module_errors.values(), default=None)}

    def lineage(self) -> Lineage:
        sources = [SourceWeight(c.ref or c.label, w, c.digest) for c, w in zip(self.sources, self.weights)]
        return Lineage(sources=sources, mode=self.mode, objective="none", score=None, seed=self.seed, details=self.details())

    def to_dict(self) -> dict:
        return {"sources": [{"source": c.ref or c.label, "task": c.task, "weight": w}
                            for c, w in zip(self.sources, self.weights)],
                "method": self.method, "mode": self.mode, "seed": self.seed, **self.details(),
                "exact": self.combined.truncation_error is None,
                "path": str(self.path) if self.path else None,
                "version": self.version.to_dict() if self.version else None}


def merge(adapters: Sequence[Candidate | str | Path], weights: Sequence[float], *, method: str = "linear",
          params: Mapping[str, Any] | None = None, rank: int | None = None, seed: int = 0,
          output: str | Path | None = None, name: str | None = None, task: str | None = None,
          description: str | None = None, registry=None, dtype: str = "float32",
          overwrite: bool = False) -> MergeResult:
    """Merge ``adapters`` (``Candidate``s, adapter folders or hub refs) with ``weights`` by ``method``.

    ``params`` are the method's own (see ``methods.get(method).params``: e.g. ``density``,
    ``majority_sign``, ``normalize``, ``rescale``); ``rank`` re-compresses exact methods and sets
    the SVD rank of dense ones; ``seed`` drives DARE's random drop. ``output`` writes the adapter
    folder there (``overwrite`` to replace one); ``name`` (with ``registry``) registers it as a
    ``composed`` version with lineage mode ``merge:<method>`` and task ``task`` (default: the
    sources' tasks joined with ``+``).

    Raises ``InvalidArgument`` (unknown method or parameter, bad weights or rank),
    ``InvalidName`` (``name``), ``CompositionError`` and its subclasses (adapters that cannot be
    combined: different base models, DoRA, Stable Diffusion LoRAs...), the hub's errors for refs;
    nothing is written or registered then.
    """
    chosen_method = methods.get(method)(**dict(params or {}))  # refuses a bad method before any pull
    if name is not None:
        AdapterName.parse(name)
        if registry is None:
            raise CompositionError("a registry is needed to register the merged adapter under a name")
    if not adapters:
        raise CompositionError("no adapters to merge")
    sources = [a if isinstance(a, Candidate) else _candidate(registry, a) for a in adapters]
    loaded = [load_lora(c.path, label=c.label) for c in sources]
    combined = combine(loaded, list(weights), method=method, rank=rank, seed=seed, **chosen_method.values)
    result = MergeResult(sources=sources, weights=combined.weights, method=method, params=dict(combined.params),
                         seed=seed, combined=combined)
    if output is None and name is None:
        return result
    base_model = combined.base_model or next((c.base_model for c in sources if c.base_model), None)
    with tempfile.TemporaryDirectory(prefix="loramgr-merge-") as scratch:
        folder = Path(output) if output is not None else Path(scratch) / "adapter"
        card = {"name": name, "sources": [c.ref or c.label for c in sources], "weights": list(combined.weights),
                "mode": result.mode, "seed": seed, "description": description}
        export_adapter(combined, folder, base_model=base_model, task_type=loaded[0].config.get("task_type"),
                       card=card, dtype=dtype, overwrite=overwrite)
        version = None
        if name is not None:
            task = task or "+".join(dict.fromkeys(c.task for c in sources if c.task)) or "merged"
            version = registry.push(folder, name=name, task=task, base=base_model, source="composed",
                                    lineage=result.lineage(),
                                    description=description or f"merged from {len(sources)} adapters ({method})")
    return replace(result, path=Path(output) if output is not None else None, version=version)


def _candidate(registry, ref: str | Path) -> Candidate:
    if not Path(str(ref)).is_dir() and registry is None:
        raise CompositionError(f"{ref} is not a folder; pass a registry to take it from the hub")
    return candidates_from_refs(registry, [str(ref)])[0]
