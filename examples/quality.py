"""How good is composition? Exact-match accuracy on the lab's held-out tasks, method by method.

For each target and seed: the base model zero-shot; the uniform average of the candidates; the
best single candidate chosen by few-shot loss; composition in ``lorahub`` mode (when the
candidates' shapes allow it) and in ``delta`` mode; and the oracle, a LoRA trained on the
target's full training data. Candidates are what a user would pass: every module of the family
for kind 1 (the composer is not told which task it is), the target's module tasks for kinds 2
and 3 (``compose --tasks a,b``).

Weights are evaluated with the composite injected into the base model (the exported adapter
computes the same thing: tests/composer/test_compose.py checks it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from loramgr.composer.errors import IncompatibleAdapters
from loramgr.composer.examples import read_examples, sample_examples
from loramgr.composer.injection import inject_composite
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import Objective, tokenize_examples
from loramgr.composer.search import search_weights

from .lab.evaluate import exact_match
from .lab.manifest import Lab, Target

METHODS = ("base (zero-shot)", "uniform average", "best single (few-shot loss)", "compose lorahub",
           "compose delta", "oracle")


@dataclass(frozen=True)
class Measurement:
    target: str
    kind: int
    method: str
    seed: int
    exact_match: float | None  # None: the method does not apply (e.g. lorahub on unequal shapes)
    seconds: float


@dataclass(frozen=True)
class Row:
    target: str
    kind: int
    method: str
    mean: float | None
    stdev: float | None
    seconds: float
    seeds: int


def candidates_for(lab: Lab, family: str, target: Target):
    modules = lab.modules(family)
    if target.kind != 1:
        modules = [m for m in modules if m.task in target.module_tasks]
    return [load_lora(m.path, label=m.task) for m in modules]


def exact_match_with_weights(model, tokenizer, adapters, weights, pairs, mode="delta") -> float:
    """Exact match of ``model`` with the adapters' composite injected at ``weights``."""
    with inject_composite(model, adapters, mode=mode) as composite:
        composite.set_weights(np.asarray(weights, dtype=np.float64))
        return exact_match(model, tokenizer, pairs)


def best_single(model, adapters, batch) -> np.ndarray:
    """The one-hot weights of the adapter with the lowest few-shot loss (one batched forward)."""
    n = len(adapters)
    with inject_composite(model, adapters, mode="delta") as composite:
        losses = [s.task_loss for s in Objective(composite, batch, l1=0.0).score_many(np.eye(n))]
    return np.eye(n)[int(np.argmin(losses))]


def measure_target(lab: Lab, family: str, target: Target, *, seeds: Sequence[int], shots: int, budget: int,
                   load_base: Callable, load_peft: Callable) -> list[Measurement]:
    """Every method on one target, for each seed (seed-independent methods measured once)."""
    model, tokenizer = load_base()
    adapters = candidates_for(lab, family, target)
    n = len(adapters)
    pairs = [(e.input, e.output) for e in read_examples(target.test)]
    few = read_examples(target.few_shot)
    out: list[Measurement] = []

    def record(method, seed, em, seconds):
        out.append(Measurement(target.name, target.kind, method, seed, em, seconds))

    started = time.perf_counter()
    record(METHODS[0], -1, exact_match(model, tokenizer, pairs), time.perf_counter() - started)
    record(METHODS[1], -1, exact_match_with_weights(model, tokenizer, adapters, np.full(n, 1.0 / n), pairs), 0.0)
    for seed in seeds:
        batch = tokenize_examples(model, tokenizer, sample_examples(few, shots, seed))
        started = time.perf_counter()
        best = best_single(model, adapters, batch)
        seconds = time.perf_counter() - started
        record(METHODS[2], seed, exact_match_with_weights(model, tokenizer, adapters, best, pairs), seconds)
        for mode, method in (("lorahub", METHODS[3]), ("delta", METHODS[4])):
            started = time.perf_counter()
            try:
                found = search_weights(model, adapters, batch, mode=mode, budget=budget, seed=seed)
            except IncompatibleAdapters:
                record(method, seed, None, 0.0)
                continue
            seconds = time.perf_counter() - started
            record(method, seed, exact_match_with_weights(model, tokenizer, adapters, found.weights, pairs, mode), seconds)
    oracle = load_peft(target)
    if oracle is not None:
        started = time.perf_counter()
        record(METHODS[5], -1, exact_match(oracle, tokenizer, pairs), time.perf_counter() - started)
    return out


def summarise(measurements: Sequence[Measurement]) -> list[Row]:
    """Mean and spread over seeds for each (target, method), in METHODS order."""
    rows = []
    keys = list(dict.fromkeys((m.target, m.kind) for m in measurements))
    for target, kind in keys:
        for method in METHODS:
            chosen = [m for m in measurements if m.target == target and m.method == method]
            if not chosen:
                continue
            values = [m.exact_match for m in chosen if m.exact_match is not None]
            rows.append(Row(target, kind, method,
                            statistics.fmean(values) if values else None,
                            statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
                            statistics.fmean(m.seconds for m in chosen), len(chosen)))
    return rows


def quality_table(lab: Lab, family: str = "t5", *, seeds: Sequence[int] = (0, 1, 2), shots: int = 5,
                  budget: int = 40, targets: Sequence[str] | None = None, say=lambda _: None) -> list[Row]:
    """The quality table for ``family``'s held-out targets (all, or those named)."""
    from loramgr.composer.base_model import load_base_model
    from loramgr.composer.compose import load_adapter

    from .lab.build import ensure_oracle

    def load_base():
        return load_base_model(str(lab.base_dir(family)), device="cpu")

    def load_peft(target):
        return load_adapter(load_base()[0], ensure_oracle(lab, family, target.name), device="cpu")

    measurements = []
    for target in lab.targets(family):
        if targets and target.name not in targets:
            continue
        say(f"{target.name} (kind {target.kind})")
        measurements += measure_target(lab, family, target, seeds=seeds, shots=shots, budget=budget,
                                       load_base=load_base, load_peft=load_peft)
    return summarise(measurements)


def format_table(rows: Sequence[Row]) -> str:
    lines = [f"{'target':<18}{'kind':>4}  {'method':<28}{'exact match':>16}{'seconds':>9}"]
    for row in rows:
        em = "n/a" if row.mean is None else f"{100 * row.mean:5.1f} ± {100 * row.stdev:4.1f}%"
        lines.append(f"{row.target:<18}{row.kind:>4}  {row.method:<28}{em:>16}{row.seconds:>9.2f}")
    return "\n".join(lines)
