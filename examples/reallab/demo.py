"""``loramgr demo`` (the default demo): the main job on the real model, small enough for 2 CPU cores.

A slice of the real-model lab (6 upstream modules trained 20 steps each, one held-out BBH target
with its oracle) is built once into the lab cache; then the table's methods run on that target
for one seed of 5 shots: zero-shot, in-context, uniform, best single, LoraHub's procedure,
loramgr's compose and the oracle.

The baseline rows (every method but loramgr's compose) depend only on the lab, the seed and the
device, so the first run stores them beside the lab and later runs reuse them: a warm run is one
real compose and its evaluation. ``fresh=True`` scores them all again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from loramgr.composer.base_model import default_device
from loramgr.composer.options import ComposeOptions

from .build import RealLab, build_reallab, slice_config
from .table import Table, run_table

DEMO_TARGET = "sports_understanding"  # the first target: slice_config(targets=1) holds it
DEMO_LAB = dict(modules=6, steps=20, oracle_steps=40, test_size=20)
COMPOSED = "loramgr default"
BASELINES_FORMAT = 1  # bump when the evaluation changes, so stored baseline rows are scored again


@dataclass(frozen=True)
class RealDemo:
    table: Table
    baselines_from: Path | None  # where the reused baseline rows were read, None when scored now

    def to_dict(self) -> dict:
        return {**self.table.to_dict(), "baselines_from": None if self.baselines_from is None
                else str(self.baselines_from)}


def run_real_demo(*, seed: int = 0, say: Callable[[str], None] = lambda _m: None, device: str | None = None,
                  fresh: bool = False) -> RealDemo:
    """The demo's table (see ``table.run_table``) on ``DEMO_TARGET``, for one seed of 5 shots."""
    lab = build_reallab(slice_config(targets=1, **DEMO_LAB), device=device, say=say)
    stored = baselines_file(lab, seed, device)
    composed = {COMPOSED: ComposeOptions(prompt_format=lab.config.prompt_format)}
    kept = None if fresh else _read_baselines(stored)
    if kept is not None:
        say(f"baselines: reusing the rows scored on the first run ({stored}); --fresh scores them again")
    table = run_table(lab, seeds=(seed,), targets=[DEMO_TARGET], configurations=composed, device=device, say=say,
                      baselines=kept is None)
    if kept is None:
        _write_baselines(stored, Table([r for r in table.rows if r.method != COMPOSED]))
        return RealDemo(table, None)
    return RealDemo(Table(kept.rows + table.rows), stored)

def baselines_file(lab: RealLab, seed: int, device: str | None) -> Path:
    where = torch.device(device or default_device()).type
    return lab.root / "demo" / f"baselines-{DEMO_TARGET}-seed{seed}-{where}-v{BASELINES_FORMAT}.json"


def _read_baselines(path: Path) -> Table | None:
    try:
        return Table.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: score them again
        return None


def _write_baselines(path: Path, table: Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(table.to_dict(), indent=1) + "\n")
    scratch.replace(path)  # whole or not at all: a run stopped half-way leaves no partial file
