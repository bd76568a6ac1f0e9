"""``loramgr demo --real``: the main job on the real model, small enough for 2 CPU cores.

A slice of the real-model lab (6 upstream modules trained 20 steps each, one held-out BBH target
with its oracle) is built once into the lab cache; then the table's methods run on that target
for one seed of 5 shots: zero-shot, in-context, uniform, best single, LoraHub's procedure,
loramgr's compose and the oracle. On 2 idle cores, packages already downloaded: 510 s cold
(conversion and training included), 146 s warm (the table alone).
"""

from __future__ import annotations

from typing import Callable

from .build import build_reallab, slice_config
from .table import Table, run_table

DEMO_TARGET = "sports_understanding"  # the first target: slice_config(targets=1) holds it
DEMO_LAB = dict(modules=6, steps=20, oracle_steps=40, test_size=20)


def run_real_demo(*, seed: int = 0, say: Callable[[str], None] = lambda _m: None,
                  device: str | None = None) -> Table:
    """The demo's table (see ``table.run_table``) on ``DEMO_TARGET``, for one seed of 5 shots."""
    lab = build_reallab(slice_config(targets=1, **DEMO_LAB), device=device, say=say)
    return run_table(lab, seeds=(seed,), targets=[DEMO_TARGET], device=device, say=say)
