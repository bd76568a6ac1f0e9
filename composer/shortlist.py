"""Shortlisting a whole hub: score every candidate module alone by its few-shot loss, keep the
best ``k``, and let the weight search work on those.

Candidates are streamed: ``per_forward`` of them are loaded, injected together and scored in one
batched forward (replica ``j`` of the batch uses candidate ``j`` alone, weight 1), then dropped
before the next group is read. Memory therefore holds at most ``per_forward`` adapters' factors
and the ``k`` best (candidate, loss) pairs, whatever the size of the pool; time grows linearly
with it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch import nn

from .candidates import Candidate
from .errors import CompositionError, IncompatibleAdapters, UnsupportedAdapter
from .injection import inject_composite
from .lora import LoraWeights, load_lora
from .objective import FewShotBatch, few_shot_losses

DEFAULT_K = 20  # LoraHub composes 20 modules
DEFAULT_PER_FORWARD = 8
_SKIPPABLE = (IncompatibleAdapters, UnsupportedAdapter)


def shortlist(model: nn.Module, batch: FewShotBatch, candidates: Iterable, *, k: int = DEFAULT_K,
              per_forward: int = DEFAULT_PER_FORWARD, progress: Callable[[int, float], None] | None = None,
              on_skip: Callable[[object, Exception], None] | None = None) -> list[tuple[object, float]]:
    """The ``k`` candidates with the lowest few-shot loss when applied alone, best first, as
    ``(candidate, loss)`` pairs (mean token cross-entropy on ``batch``; ties keep pool order).

    ``candidates`` is any iterable (a generator is read lazily) of things with a ``path`` to a
    PEFT LoRA folder and a ``label`` (``Candidate``), or plain folder paths. ``per_forward``
    of them share one forward. A candidate that cannot be scored on this model (a module the
    model lacks, other shapes, DoRA, LoRA on embeddings) is skipped and passed to
    ``on_skip(candidate, error)``; ``progress(scored, best_loss)`` runs after every forward.

    Raises ``CompositionError`` for ``k`` or ``per_forward`` below 1, or when no candidate
    could be scored at all.
    """
    for name, value in (("k", k), ("per_forward", per_forward)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CompositionError(f"{name} must be a whole number >= 1, got {value!r}")
    kept: list[tuple[float, int, object]] = []  # max-heap of the k best: (-loss, -position, candidate)
    scored = 0
    stream = enumerate(candidates)
    while group := list(itertools.islice(stream, per_forward)):
        for position, candidate, loss in _score_group(model, batch, group, on_skip):
            scored += 1
            entry = (-loss, -position, candidate)
            if len(kept) < k:
                heapq.heappush(kept, entry)
            elif entry > kept[0]:
                heapq.heapreplace(kept, entry)
        if progress is not None and kept:
            progress(scored, -max(kept)[0])
    if not kept:
        raise CompositionError("no candidate could be scored on this model")
    return [(candidate, -negative_loss) for negative_loss, _, candidate in sorted(kept, reverse=True)]


def hub_pool(registry, *, base: str | None = None, task: str | Sequence[str] | None = None) -> Iterator[Candidate]:
    """Every adapter of ``base`` in the hub (latest versions, composed ones left out) as
    ``Candidate``s, each pulled only when the consumer reaches it."""
    for version in registry.search(base=base, task=task, limit=None):
        if version.source == "composed":
            continue
        yield Candidate(label=version.ref, path=Path(registry.pull(version.ref)), task=version.task,
                        ref=version.ref, digest=version.digest, base_model=version.base_model)


def _score_group(model, batch, group, on_skip) -> list[tuple[int, object, float]]:
    """(position, candidate, loss) for the candidates of one group that could be scored."""
    loaded: list[tuple[int, object, LoraWeights]] = []
    for position, candidate in group:
        try:
            loaded.append((position, candidate, _load(candidate)))
        except _SKIPPABLE as exc:
            _skip(on_skip, candidate, exc)
    try:
        losses = _alone_losses(model, batch, [adapter for _, _, adapter in loaded])
    except _SKIPPABLE:
        # Find the culprit(s): score the group one by one (a failed injection costs no forward).
        results = []
        for position, candidate, adapter in loaded:
            try:
                results.append((position, candidate, _alone_losses(model, batch, [adapter])[0]))
            except _SKIPPABLE as exc:
                _skip(on_skip, candidate, exc)
        return results
    return [(position, candidate, loss) for (position, candidate, _), loss in zip(loaded, losses)]


def _alone_losses(model, batch, adapters: list[LoraWeights]) -> list[float]:
    if not adapters:
        return []
    # delta mode takes any ranks and target sets; alone, with weight 1, it is the adapter itself.
    with inject_composite(model, adapters, mode="delta") as composite:
        composite.set_candidate_weights(np.eye(len(adapters)))
        losses = few_shot_losses(model, batch, replicas=len(adapters)).tolist()
    return [loss if math.isfinite(loss) else math.inf for loss in losses]


def _load(candidate) -> LoraWeights:
    path = Path(getattr(candidate, "path", candidate))
    return load_lora(path, label=str(getattr(candidate, "label", path)))


def _skip(on_skip, candidate, exc: Exception) -> None:
    if on_skip is not None:
        on_skip(candidate, exc)
