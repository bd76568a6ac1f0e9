"""Registering a built lab's modules in a hub, each with its task name and example set."""

from __future__ import annotations

from .manifest import Lab


def register_lab(lab: Lab, hub, *, family: str = "t5", namespace: str = "lab") -> list:
    """Push every module of ``family`` as ``<namespace>/<task>`` (base = the lab's stable base id,
    examples = the module's example set). ``hub`` is a ``loramgr.Hub`` or a registry."""
    return [hub.push(module.path, name=f"{namespace}/{module.task}", task=module.task,
                     base=lab.base_id(family), examples=module.examples_path,
                     description=f"lab module for task {module.task} (rank {module.rank})")
            for module in lab.modules(family)]
