"""``delta`` (also ``linear``): the exact weighted sum of updates, kept factored.

For one module, ``sum_i w_i * s_i * B_i @ A_i`` equals ``B @ A`` with ``A = cat_i(A_i)`` stacked
along the rank and ``B = cat_i(w_i * s_i * B_i)``: rank ``sum_i r_i``, scaling 1. Ranks, alphas,
rsLoRA and per-module patterns may differ freely because each scaling is folded into its B.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..lora import LoraFactors
from .base import CombineMethod, Part


class Delta(CombineMethod):
    name = "delta"
    summary = "exact weighted sum of the updates, factors concatenated along the rank"

    def mix(self, module: str, parts: Sequence[Part], *, seed: int) -> LoraFactors:
        A = torch.cat([f.A for _, f in parts], dim=0)
        B = torch.cat([(w * f.scaling) * f.B for w, f in parts], dim=1)
        return LoraFactors(A, B, 1.0)


class Linear(Delta):
    """The same method under mergekit's and PEFT's name for it."""

    name = "linear"
