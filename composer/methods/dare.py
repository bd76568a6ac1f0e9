"""``dare`` and ``dare_ties``: DARE's random drop-and-rescale on the dense updates.

``dare`` drops each entry of every update with probability ``1 - density``, rescales the rest by
``1/density`` and takes the weighted sum (PEFT's and mergekit's ``dare_linear``); ``dare_ties``
adds TIES' sign election. Draws come from a ``torch.Generator`` seeded by (seed, module path),
so the same seed gives the same result. See ``ties.py`` for the shared steps.
"""

from __future__ import annotations

from .base import Param
from .ties import MAJORITY_SIGN, NORMALIZE, TaskArithmetic

DENSITY = Param("density", 0.5, "probability of keeping each entry of an update", low=0.0, high=1.0)
RESCALE = Param("rescale", True, "divide the kept entries by density to preserve the expected update")


class Dare(TaskArithmetic):
    name = "dare"
    summary = "DARE: random drop with rescale, weighted sum (dense, then SVD)"
    params = (DENSITY, RESCALE, NORMALIZE)
    sparsify = "random"
    sign_consensus = False


class DareTies(TaskArithmetic):
    name = "dare_ties"
    summary = "DARE's random drop followed by TIES' sign election (dense, then SVD)"
    params = (DENSITY, RESCALE, MAJORITY_SIGN, NORMALIZE)
    sparsify = "random"
    sign_consensus = True
