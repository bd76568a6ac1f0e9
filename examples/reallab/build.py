"""Build the real-model lab once: base model, upstream LoRA modules, held-out targets, oracles.

A lab is identified by its configuration (tasks, recipes, prompt format, seed, split sizes):
it lives in ``<cache>/labs/<digest of the configuration>/``, so a small slice (the tests) and
the full lab (the benchmark) never overwrite each other, and the base model and the downloaded
packages are shared. Every module is written to a temp folder and renamed when complete, so
an interrupted build resumes where it stopped.

    python -m examples.reallab.build                 # the full lab (about an hour on 2 cores)
    python -m examples.reallab.build --modules 4 --targets 1 --steps 10   # a slice
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from .sources import BASE_ID, base_model_dir, cache_dir, folder_replaced, task_files
from .tasks import TARGET_TASKS, TASK_FORMAT, UPSTREAM_TASKS, Split, Task, TaskExample, is_bbh_source, load_task, split_task
from .train import ALL_LINEAR, Recipe, save_lora, train_lora

Say = Callable[[str], None]
DEFAULT_PROMPT_FORMAT = "chat"  # SmolLM2-Instruct is a chat model
REGISTERED_EXAMPLES = 20  # examples stored with each module, for `compose --tasks` on the lab hub


@dataclass(frozen=True)
class LabConfig:
    upstream: tuple[str, ...] = UPSTREAM_TASKS
    targets: tuple[str, ...] = TARGET_TASKS
    module_recipe: Recipe = Recipe()
    oracle_recipe: Recipe = Recipe(targets=ALL_LINEAR, steps=40)
    prompt_format: str = DEFAULT_PROMPT_FORMAT
    seed: int = 0
    test_size: int = 30
    shot_pool: int = 50
    train_size: int = 400

    def to_dict(self) -> dict:
        return {"base": BASE_ID, "upstream": list(self.upstream), "targets": list(self.targets),
                "module_recipe": self.module_recipe.to_dict(), "oracle_recipe": self.oracle_recipe.to_dict(),
                "prompt_format": self.prompt_format, "seed": self.seed, "test_size": self.test_size,
                "shot_pool": self.shot_pool, "train_size": self.train_size, "task_format": TASK_FORMAT}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RealLab:
    """A built lab: where its parts are, and the task data behind them."""

    root: Path
    config: LabConfig
    base_dir: Path
    splits: dict[str, Split] = field(repr=False)

    def module_dir(self, task: str) -> Path:
        return self.root / "modules" / task.replace("/", "-")

    def oracle_dir(self, task: str) -> Path:
        return self.root / "oracles" / task.replace("/", "-")

    @property
    def modules(self) -> list[Path]:
        return [self.module_dir(t) for t in self.config.upstream]


def _write_jsonl(path: Path, examples) -> None:
    path.write_text("".join(json.dumps({"input": e.input, "output": e.output}, ensure_ascii=False) + "\n"
                            for e in examples), encoding="utf-8")


def load_base(base_dir: Path, device: str | None = None):
    """(model, tokenizer) of the converted base model, in eval mode."""
    from loramgr.composer.base_model import load_base_model

    return load_base_model(str(base_dir), device=device)


def build_reallab(config: LabConfig = LabConfig(), *, cache: Path | None = None, device: str | None = None,
                  say: Say = lambda _m: None, progress: bool = True) -> RealLab:
    """The lab for ``config``, trained on first use (resumable) and read from the cache after.

    Raises ``LabSourceError`` (packages, model file, task files) and refuses a target task that
    is not a BBH source or an upstream task that is one.
    """
    from .sources import LabSourceError

    cache = cache or cache_dir()
    for name in config.upstream:
        if is_bbh_source(name):
            raise LabSourceError(f"upstream task {name} is a BIG-Bench Hard source: it must stay held out")
    overlap = set(config.upstream) & set(config.targets)
    if overlap:
        raise LabSourceError(f"tasks both upstream and target: {', '.join(sorted(overlap))}")
    base_dir = base_model_dir(cache=cache, say=say)
    files = task_files(config.upstream + config.targets, cache=cache, say=say)
    tasks = {name: load_task(name, files[name]) for name in config.upstream + config.targets}
    splits = {}
    for name, task in tasks.items():
        held = config.test_size if name in config.targets else 0
        pool = config.shot_pool if name in config.targets else REGISTERED_EXAMPLES
        splits[name] = split_task(task, test=held, shots=pool, train=config.train_size, seed=config.seed)
    root = cache / "labs" / config.digest()
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    lab = RealLab(root, config, base_dir, splits)
    jobs = [(name, lab.module_dir(name), config.module_recipe) for name in config.upstream] + \
           [(name, lab.oracle_dir(name), config.oracle_recipe) for name in config.targets]
    todo = [job for job in jobs if not (job[1] / "adapter_model.safetensors").is_file()]
    for name in config.targets:
        folder = root / "targets" / name.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        _write_jsonl(folder / "test.jsonl", splits[name].test)
        _write_jsonl(folder / "shots.jsonl", splits[name].shots)
    if not todo:
        return lab
    model, tokenizer = load_base(base_dir, device)
    say(f"training {len(todo)} of {len(jobs)} LoRAs (modules on {len(config.upstream)} upstream tasks, "
        f"oracles on {len(config.targets)} targets) into {root}")
    bar = _bar(sum(r.steps for _, _, r in todo), progress)
    for index, (name, folder, recipe) in enumerate(todo):
        started = time.perf_counter()
        seed = config.seed * 1000 + (config.upstream + config.targets).index(name)
        split = splits[name]
        trained, loss = train_lora(model, tokenizer, split.train or split.shots, recipe,
                                   prompt_format=config.prompt_format, seed=seed,
                                   step_done=lambda step, l, n=name: bar(1, f"{n} loss {l:.3f}"))
        with folder_replaced(folder) as scratch:
            save_lora(trained, scratch, task=name, prompt_format=config.prompt_format, recipe=recipe)
            _write_jsonl(scratch / "examples.jsonl", split.shots[:REGISTERED_EXAMPLES])
            (scratch / "training.json").write_text(json.dumps(
                {"task": name, "seed": seed, "final_loss": loss, "examples": len(split.train or split.shots),
                 "seconds": round(time.perf_counter() - started, 1), "prompt_format": config.prompt_format,
                 "recipe": recipe.to_dict()}, indent=2) + "\n")
        del trained
    bar(0, None)
    return lab


def _bar(total: int, enabled: bool):
    """``update(steps, label)``; ``update(0, None)`` closes. A tqdm bar on a terminal only."""
    if not enabled or not sys.stderr.isatty():
        return lambda _n, _label: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="reallab", unit="step", file=sys.stderr)

    def update(steps: int, label: str | None) -> None:
        if label is None:
            bar.close()
            return
        bar.update(steps)
        bar.set_postfix_str(label, refresh=False)
    return update


def slice_config(*, modules: int, targets: int, steps: int, oracle_steps: int | None = None,
                 prompt_format: str = DEFAULT_PROMPT_FORMAT, test_size: int = 30) -> LabConfig:
    """A smaller lab: the first ``modules`` upstream tasks and ``targets`` targets, shorter training."""
    base = LabConfig()
    return replace(base, upstream=base.upstream[:modules], targets=base.targets[:targets],
                   module_recipe=replace(base.module_recipe, steps=steps),
                   oracle_recipe=replace(base.oracle_recipe, steps=oracle_steps or steps),
                   prompt_format=prompt_format, test_size=test_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=len(UPSTREAM_TASKS), help="upstream modules to train")
    parser.add_argument("--targets", type=int, default=len(TARGET_TASKS), help="held-out targets (with oracles)")
    parser.add_argument("--steps", type=int, default=LabConfig().module_recipe.steps, help="steps per module")
    parser.add_argument("--oracle-steps", type=int, default=LabConfig().oracle_recipe.steps)
    parser.add_argument("--prompt-format", default=DEFAULT_PROMPT_FORMAT, choices=("plain", "chat"))
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = slice_config(modules=args.modules, targets=args.targets, steps=args.steps,
                          oracle_steps=args.oracle_steps, prompt_format=args.prompt_format)
    from loramgr.hub.errors import LoramgrError

    try:
        lab = build_reallab(config, device=args.device, say=lambda m: print(m, file=sys.stderr))
    except LoramgrError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(lab.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
