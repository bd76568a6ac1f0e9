"""``ties``: TIES-merging on the dense updates, one module at a time.

Per module, with ``d_i = s_i * B_i @ A_i``:
1. sparsify each ``d_i`` (TIES: keep the ``density`` fraction of entries largest in magnitude);
2. weight them, ``t_i = w_i * d_i``;
3. with sign consensus, elect a sign per entry (``total``: the sign of ``sum_i t_i``;
   ``frequency``: the sign of ``sum_i sign(t_i)``; zero counts as positive) and drop the
   ``t_i`` entries that disagree;
4. sum what is left; with ``normalize``, divide each entry by how many adapters kept it
   (TIES' "disjoint mean", PEFT's behaviour).

The sign is elected on the *weighted* updates (as mergekit does) so that a negative weight
flips an adapter's vote. ``normalize`` is off by default so that, as in ``delta``, the weights
scale the updates directly: one adapter at weight 1.0 and density 1.0 gives its update back.
DARE is the same class with random sparsification (see ``dare.py``).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from .base import CombineMethod, Param, Part, dense_update, module_generator

# TIES keeps the top 20% of each update by default, as in the TIES paper.
DENSITY = Param("density", 0.2, "fraction of each update's entries to keep (largest magnitudes)",
                low=0.0, high=1.0)
NORMALIZE = Param("normalize", False, "divide each entry by the number of adapters that kept it")
MAJORITY_SIGN = Param("majority_sign", "total", "how the sign of each entry is elected",
                      choices=("total", "frequency"))


class TaskArithmetic(CombineMethod):
    """Sparsify, weight, optionally elect signs, sum: the family TIES and DARE belong to."""

    dense = True
    sparsify: ClassVar[str]  # "magnitude" or "random"
    sign_consensus: ClassVar[bool]

    def mix(self, module: str, parts: Sequence[Part], *, seed: int) -> torch.Tensor:
        density = self.values["density"]
        generator = module_generator(seed, module) if self.sparsify == "random" else None
        # One dense (out, in) matrix per adapter: the memory cost of a dense method, per module.
        updates = torch.stack([
            w * self._sparsify(dense_update(f), density, generator) for w, f in parts
        ])
        if self.sign_consensus:
            updates = updates * self._agreement(updates)
        merged = updates.sum(dim=0)
        if self.values.get("normalize"):
            kept = (updates != 0).sum(dim=0).clamp(min=1)
            merged = merged / kept
        return merged

    def _sparsify(self, update: torch.Tensor, density: float, generator) -> torch.Tensor:
        if density >= 1.0:
            return update
        if self.sparsify == "magnitude":
            return keep_largest(update, density)
        return drop_random(update, density, generator, rescale=self.values["rescale"])

    def _agreement(self, updates: torch.Tensor) -> torch.Tensor:
        """Mask of the entries whose sign matches the elected sign."""
        signs = updates.sign()
        votes = updates.sum(dim=0) if self.values["majority_sign"] == "total" else signs.sum(dim=0)
        elected = torch.where(votes >= 0, 1.0, -1.0).to(updates.dtype)
        return signs == elected


def keep_largest(update: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ``int(density * numel)`` entries largest in magnitude (PEFT's rule)."""
    k = int(density * update.numel())
    mask = torch.zeros(update.numel(), dtype=torch.bool, device=update.device)
    if k > 0:
        mask[torch.topk(update.abs().reshape(-1), k).indices] = True
    return update * mask.reshape(update.shape)


def drop_random(update: torch.Tensor, density: float, generator: torch.Generator, *, rescale: bool) -> torch.Tensor:
    """Keep each entry with probability ``density`` (DARE); rescale by ``1/density`` to keep the
    expected update. Draws come from ``generator`` so a seed reproduces the mask."""
    if density <= 0.0:
        return torch.zeros_like(update)
    # Drawn on the CPU so the mask for a seed is the same whatever device the factors are on.
    keep = (torch.rand(update.shape, generator=generator) < density).to(update.device)
    kept = update * keep
    return kept / density if rescale else kept


class Ties(TaskArithmetic):
    name = "ties"
    summary = "TIES: magnitude trim, sign election, sum of the agreeing entries (dense, then SVD)"
    params = (DENSITY, MAJORITY_SIGN, NORMALIZE)
    sparsify = "magnitude"
    sign_consensus = True
