"""Sanity tables for a built lab: did each module learn its task, and is each target fair?

``python -m loramgr.examples.lab.report ROOT [--family t5]`` prints both tables:

- modules: exact match of the base model and of the module on the module's own task (held-out
  payloads), and the cross-entropy of both on it;
- targets: exact match on the target's test split of the base, the best single module, the plain
  sum of the target's own modules (weights 1.0: the combination a composer should find) and the
  oracle. A fair kind-2/3 target has sum > best single; the oracle is the ceiling.

The sum is merged densely here (tiny models); the composer's own algebra is what is benchmarked.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Mapping

import torch

from .evaluate import exact_match, read_examples
from .manifest import Lab
from .tasks import TASKS, sample_examples, stream_rng
from .train import encode, mean_loss


def load_base(lab: Lab, family: str):
    """(tokenizer, model) of the lab's ``family`` base, freshly loaded."""
    from .jobs import load_base as cached

    tokenizer, model = cached(lab.base_dir(family))
    return tokenizer, copy.deepcopy(model)


def merged(base, adapters: Mapping[Path, float]):
    """A copy of ``base`` with ``sum w * scaling * B @ A`` of each adapter folder added to its weights."""
    from safetensors.torch import load_file

    model = copy.deepcopy(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for folder, weight in adapters.items():
            config = json.loads((Path(folder) / "adapter_config.json").read_text())
            scaling = config["lora_alpha"] / config["r"]
            tensors = load_file(str(Path(folder) / "adapter_model.safetensors"))
            for key, a in tensors.items():
                if ".lora_A." in key:
                    path = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                    b = tensors[key.replace(".lora_A.", ".lora_B.")]
                    modules[path].weight += weight * scaling * (b @ a)
    return model.eval()


def module_table(lab: Lab, family: str = "t5", n: int = 100) -> list[dict]:
    """One row per module: base vs module exact match and loss on ``n`` held-out examples of its task."""
    tokenizer, base = load_base(lab, family)
    rows = []
    for module in lab.modules(family):
        examples = sample_examples(TASKS[module.task], stream_rng(lab.seed, "report", module.task), n, "test")
        data = encode(family, tokenizer, examples)
        tuned = merged(base, {module.path: 1.0})
        rows.append({"task": module.task, "rank": module.rank, "targets": len(module.targets),
                     "base_em": exact_match(base, tokenizer, examples),
                     "module_em": exact_match(tuned, tokenizer, examples),
                     "base_loss": mean_loss(base, data), "module_loss": mean_loss(tuned, data)})
    return rows


def target_table(lab: Lab, family: str = "t5") -> list[dict]:
    """One row per target: base, best single module, sum of its modules, oracle (exact match on test)."""
    tokenizer, base = load_base(lab, family)
    paths = {m.task: m.path for m in lab.modules(family)}
    rows = []
    for target in lab.targets(family):
        test = read_examples(target.test)
        singles = {task: exact_match(merged(base, {path: 1.0}), tokenizer, test) for task, path in paths.items()}
        best = max(singles, key=singles.get)
        own = {paths[t]: 1.0 for t in target.module_tasks if t in paths}
        rows.append({"target": target.name, "kind": target.kind, "base_em": exact_match(base, tokenizer, test),
                     "best_single": f"{best} {singles[best]:.2f}",
                     "sum_em": exact_match(merged(base, own), tokenizer, test) if own else float("nan"),
                     "oracle_em": exact_match(merged(base, {lab.oracle_dir(family, target): 1.0}), tokenizer, test)})
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain text table (floats with two decimals)."""
    if not rows:
        return "(empty)"
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    heads = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--family", action="append", help="t5 and/or llama (default: both)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lab = Lab.load(args.root)
    for family in args.family or list(lab.families):
        print(f"\n== {family}: modules on their own task\n" + format_table(module_table(lab, family)))
        print(f"\n== {family}: targets\n" + format_table(target_table(lab, family)))


if __name__ == "__main__":
    main()
