"""``lorahub``: LoraHub's factor-wise mix, ``(sum_i w_i s_i B_i) @ (sum_i w_i A_i)``.

Each adapter's scaling is folded into its B first, so adapters with different alphas (or rsLoRA)
mix correctly. The result keeps the common rank but is not the weighted sum of the updates
(cross terms ``w_i w_j B_j A_i`` appear); that is LoraHub's choice, kept here on purpose.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import IncompatibleAdapters
from ..lora import LoraFactors
from .base import CombineMethod, Part


class LoraHub(CombineMethod):
    name = "lorahub"
    summary = "LoraHub: weighted sums of the A and of the (scaled) B factors; needs equal shapes"

    def mix(self, module: str, parts: Sequence[Part], *, seed: int) -> LoraFactors:
        """Raises ``IncompatibleAdapters`` when the adapters' factors differ in shape."""
        shapes = {(tuple(f.A.shape), tuple(f.B.shape)) for _, f in parts}
        if len(shapes) > 1:
            described = "; ".join(f"A {a} / B {b}" for a, b in sorted(shapes))
            raise IncompatibleAdapters(
                f"lorahub needs equal factor shapes, but module {module} has {described}; "
                "use --mode delta to combine adapters of different ranks",
                module=module,
            )
        (w0, f0), *rest = parts
        A = w0 * f0.A
        B = (w0 * f0.scaling) * f0.B
        for w, f in rest:
            A = A + w * f.A
            B = B + (w * f.scaling) * f.B
        return LoraFactors(A, B, 1.0)
