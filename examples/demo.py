"""``loramgr demo``: the main job on the offline lab, end to end.

Builds (or reuses) the lab in the demo's own home, registers its LoRA modules in the demo's own
hub, composes an adapter for a held-out union task from a few examples, and compares it on the
task's test split with the base model and the uniform average of the same modules.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loramgr.composer.align import combine
from loramgr.composer.base_model import load_base_model
from loramgr.composer.candidates import candidates_for_tasks
from loramgr.composer.compose import Composition, compose, load_adapter
from loramgr.composer.examples import read_examples
from loramgr.composer.export import export_adapter
from loramgr.composer.injection import inject_composite
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import few_shot_loss, tokenize_examples
from loramgr.composer.options import ComposeOptions
from loramgr.hub.errors import InvalidArgument
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from .lab.build import build_lab, ensure_oracle
from .lab.evaluate import exact_match, generate
from .lab.manifest import Lab, Target
from .lab.registry import register_lab
from .quality import best_single

Say = Callable[[str], None]


@dataclass(frozen=True)
class MethodResult:
    method: str
    exact_match: float
    few_shot_loss: float | None


@dataclass(frozen=True)
class DemoReport:
    target: Target
    candidates: list[str]
    weights: tuple[float, ...]
    methods: list[MethodResult]
    predictions: list[tuple[str, str, str]]  # (input, expected, predicted)
    adapter_path: Path
    version_ref: str | None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "target": {"name": self.target.name, "kind": self.target.kind, "description": self.target.description,
                       "module_tasks": list(self.target.module_tasks)},
            "modules": [{"source": c, "weight": w} for c, w in zip(self.candidates, self.weights)],
            "methods": [vars(m) for m in self.methods],
            "predictions": [{"input": i, "expected": e, "predicted": p} for i, e, p in self.predictions],
            "adapter_path": str(self.adapter_path), "version": self.version_ref,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def adapter_name(target: Target) -> str:
    """A hub name for the target's composed adapter ('k2-l2d+low' -> 'k2-l2d-low')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", target.name).strip("-.") or "composed"


def pick_target(lab: Lab, family: str, name: str | None) -> Target:
    """The named target, or the first held-out union task (kind 2) of the family."""
    if name:
        return lab.target(family, name)
    unions = [t for t in lab.targets(family) if t.kind == 2]
    if not unions:
        raise InvalidArgument(f"the lab has no union target for {family}; pass --target")
    return unions[0]


def run_demo(home: Path, *, registry: Registry | None = None, size: str = "default", seed: int = 0,
             family: str = "t5", target: str | None = None, shots: int = 5, budget: int | None = None,
             say: Say = lambda _: None, progress=None) -> DemoReport:
    """Run the demo in ``home`` (lab, hub and outputs live there); ``registry`` overrides the
    demo's own hub. Raises ``LoramgrError`` subclasses for bad options."""
    home = Path(home)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    say(f"lab: building or reusing the {size} lab in {home / 'lab'} (seed {seed})")
    lab = build_lab(home / "lab", size=size, seed=seed,
                    progress=(lambda what, done, total: say(f"  [{done}/{total}] {what}")))
    seconds["lab"] = time.perf_counter() - started
    own = registry is None
    registry = registry or Registry(Settings.load(environ={}, home=str(home / "hub")))
    try:
        if not registry.search(base=lab.base_id(family), limit=1):
            say(f"hub: registering {len(lab.modules(family))} LoRA modules")
            register_lab(lab, registry, family=family)
        chosen = pick_target(lab, family, target)
        say(f"target: {chosen.name} (kind {chosen.kind}): {chosen.description}")
        return _compose_and_compare(lab, registry, family, chosen, home=home, shots=shots, budget=budget,
                                    seed=seed, seconds=seconds, say=say, progress=progress)
    finally:
        if own:
            registry.close()


def _compose_and_compare(lab: Lab, registry, family: str, target: Target, *, home: Path, shots: int,
                         budget: int | None, seed: int, seconds: dict, say: Say, progress) -> DemoReport:
    candidates = candidates_for_tasks(registry, target.module_tasks, base=lab.base_id(family))
    options = ComposeOptions(shots=shots, budget=budget, mode="delta", seed=seed)  # compose's defaults otherwise
    unit = "steps" if options.search == "gradient" else "evaluations"
    say(f"compose: {len(candidates)} candidates ({', '.join(c.ref for c in candidates)}), "
        f"{shots} shots, {options.search} search, up to {options.budget} {unit}")
    model, tokenizer = load_base_model(str(lab.base_dir(family)))
    started = time.perf_counter()
    output = home / "out" / target.name
    result: Composition = compose(model, candidates, read_examples(target.few_shot), tokenizer=tokenizer,
                                  options=options, output=output,
                                  name=f"lab/{adapter_name(target)}", task=target.name, registry=registry,
                                  base_model=lab.base_id(family), progress=progress, overwrite=True)
    seconds["compose"] = time.perf_counter() - started
    test = read_examples(target.test)
    pairs = [(e.input, e.output) for e in test]

    started = time.perf_counter()
    methods = [MethodResult("base model (zero-shot)", exact_match(model, tokenizer, pairs), result.base_loss)]
    with tempfile.TemporaryDirectory(prefix="loramgr-demo-") as scratch:
        adapters = [load_lora(c.path, label=c.label) for c in candidates]
        uniform = combine(adapters, [1.0 / len(adapters)] * len(adapters), method="delta")
        export_adapter(uniform, Path(scratch) / "uniform", base_model=lab.base_id(family),
                       task_type=adapters[0].config.get("task_type"))
        uniform_model = load_adapter(load_base_model(str(lab.base_dir(family)))[0], Path(scratch) / "uniform")
        methods.append(MethodResult("uniform average", exact_match(uniform_model, tokenizer, pairs),
                                    result.uniform_loss))
    batch = tokenize_examples(model, tokenizer, result.examples)
    single = best_single(model, adapters, batch)
    with inject_composite(model, adapters, mode="delta") as composite:
        composite.set_weights(single)
        methods.append(MethodResult(f"best single module ({candidates[int(single.argmax())].task})",
                                    exact_match(model, tokenizer, pairs), few_shot_loss(model, batch)))
    composed = load_adapter(load_base_model(str(lab.base_dir(family)))[0], output)
    methods.append(MethodResult("composed (loramgr)", exact_match(composed, tokenizer, pairs), result.loss))
    oracle = load_adapter(load_base_model(str(lab.base_dir(family)))[0], ensure_oracle(lab, family, target.name))
    methods.append(MethodResult("oracle (LoRA trained on the task)", exact_match(oracle, tokenizer, pairs),
                                few_shot_loss(oracle, batch)))
    shown = pairs[:6]
    predicted = generate(composed, tokenizer, [i for i, _ in shown],
                         max_new_tokens=max(len(tokenizer(o)["input_ids"]) for _, o in shown) + 1)
    seconds["evaluate"] = time.perf_counter() - started
    return DemoReport(target=target, candidates=[c.ref for c in candidates], weights=result.weights,
                      methods=methods, predictions=[(i, o, p) for (i, o), p in zip(shown, predicted)],
                      adapter_path=output, version_ref=result.version.ref if result.version else None,
                      seconds=seconds)
