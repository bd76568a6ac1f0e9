"""Held-out target tasks: what a composition is asked to solve from a few examples.

Three kinds (README.md says why each is a fair test):

1. ``kind=1`` — the target *is* one module's task; the composer is not told which and must find it
   among all modules from a few shots.
2. ``kind=2`` — the union of 2-3 module tasks (what ``loramgr compose --tasks a,b`` is for): each
   example belongs to one of them and its keyword says which.
3. ``kind=3`` — a composite instruction no module was trained on (``l2d:low: aB`` -> ``0b``): each
   character is transformed by the task that handles its class, so no single module solves an
   example but the sum of two does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .tasks import DIGITS, LETTERS, TASKS, UPPER, sample_payload

CLASSES = {"lower": LETTERS, "upper": UPPER, "digits": DIGITS}


@dataclass(frozen=True)
class TargetSpec:
    """How to draw examples of one target; ``module_tasks`` are the tasks it is made from."""

    name: str
    kind: int
    description: str
    module_tasks: tuple[str, ...]
    sample: Callable[[random.Random, str], tuple[str, str]]

    def examples(self, rng: random.Random, n: int, split: str) -> list[tuple[str, str]]:
        return [self.sample(rng, split) for _ in range(n)]


def same_task(task: str) -> TargetSpec:
    """Kind 1: exactly ``task``, under an opaque name."""
    spec = TASKS[task]
    return TargetSpec(f"k1-{task}", 1, f"one of the module tasks ({task}: {spec.description}); "
                      "the composer is not told which", (task,),
                      lambda rng, split: spec.render(sample_payload(rng, spec.fmt, split)))


def union(*tasks: str) -> TargetSpec:
    """Kind 2: examples drawn evenly from ``tasks``; the keyword says which applies."""
    specs = [TASKS[t] for t in tasks]

    def sample(rng: random.Random, split: str) -> tuple[str, str]:
        spec = rng.choice(specs)
        return spec.render(sample_payload(rng, spec.fmt, split))

    return TargetSpec("k2-" + "+".join(tasks), 2, "the union of " + ", ".join(
        f"{t} ({TASKS[t].description})" for t in tasks) + "; the keyword says which", tuple(tasks), sample)


def per_class(first: str, second: str, fmt: str, description: str) -> TargetSpec:
    """Kind 3: the instruction ``first:second:`` on a payload that mixes both tasks' character
    classes; each character gets the map of the task whose input format holds it."""
    maps = [_char_map(TASKS[first]), _char_map(TASKS[second])]

    def apply(payload: str) -> str:
        return "".join(next(m[c] for m in maps if c in m) for c in payload)

    def sample(rng: random.Random, split: str) -> tuple[str, str]:
        payload = sample_payload(rng, fmt, split)
        return f"{first}:{second}: {payload}", apply(payload)

    return TargetSpec(f"k3-{first}:{second}", 3, description, (first, second), sample)


def _char_map(task) -> dict[str, str]:
    """The character map of a per-character task whose format is one character class."""
    return {c: task.fn(c) for c in CLASSES[task.fmt]}


TARGETS: dict[str, TargetSpec] = {spec.name: spec for spec in [
    same_task("rotr"),
    same_task("shift"),
    union("l2d", "low"),
    union("shift", "low"),
    union("l2d", "low", "d2l"),
    per_class("l2d", "low", "mixed", "on mixed-case payloads, lowercase letters become digits (l2d) "
              "and capitals become lowercase (low): aB -> 0b"),
    per_class("shift", "low", "mixed", "on mixed-case payloads, lowercase letters shift one forward "
              "(shift) and capitals become lowercase (low): aB -> bb"),
    per_class("l2d", "d2l", "alnum", "on payloads of letters and digits, letters become digits (l2d) "
              "and digits become letters (d2l): a3 -> 0d"),
]}
