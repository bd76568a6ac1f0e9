"""Evaluations per second on the lab model: LoraHub's state-dict approach against ours.

    python benchmarks/eval_speed_lab.py [--lab-dir DIR] [--size default] [--repeats 5]

The same comparison as eval_speed.py, on the offline lab's T5-type base model with its own LoRA
modules and a held-out target's 5 few-shot examples. LoraHub's reference sums state dicts key
by key, so it needs modules of one shape: the largest group of same-shaped lab modules is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval_speed import LoraHubReference, evals_per_second  # noqa: E402
from loramgr.composer.base_model import load_base_model  # noqa: E402
from loramgr.composer.examples import read_examples, sample_examples  # noqa: E402
from loramgr.composer.injection import inject_composite  # noqa: E402
from loramgr.composer.lora import load_lora  # noqa: E402
from loramgr.composer.objective import Objective, tokenize_examples  # noqa: E402
from loramgr.examples.lab.build import build_lab  # noqa: E402


def seq2seq_inputs(tokenizer, examples) -> dict[str, torch.Tensor]:
    encoded = tokenizer([e.input for e in examples], padding=True, return_tensors="pt")
    labels = tokenizer([e.output for e in examples], padding=True, return_tensors="pt")
    ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": ids}


def same_shaped_group(modules) -> list:
    groups = defaultdict(list)
    for module in modules:
        config = json.loads((module.path / "adapter_config.json").read_text())
        groups[(module.rank, tuple(sorted(config["target_modules"])))].append(module)
    return max(groups.values(), key=len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=Path.home() / ".cache" / "loramgr-lab")
    parser.add_argument("--size", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    lab = build_lab(args.lab_dir / f"{args.size}-seed0", size=args.size, seed=0)
    modules = same_shaped_group(lab.modules("t5"))
    target = next(t for t in lab.targets("t5") if t.kind == 1)
    examples = sample_examples(read_examples(target.few_shot), 5, 0)
    adapters = [load_lora(m.path, label=m.task) for m in modules]

    def fresh():
        return load_base_model(str(lab.base_dir("t5")), device="cpu")

    model, tokenizer = fresh()
    reference = LoraHubReference(fresh()[0], [m.path for m in modules], seq2seq_inputs(tokenizer, examples))
    objective = {mode: Objective(inject_composite(fresh()[0], adapters, mode=mode),
                                 tokenize_examples(model, tokenizer, examples)) for mode in ("lorahub", "delta")}
    rng = np.random.default_rng(0)
    mismatch = max(abs(reference.score(w) - objective["lorahub"].score(w).loss)
                   for w in rng.uniform(-1.5, 1.5, size=(3, len(adapters))))
    methods = {"(a) reference: state dict + set_peft_model_state_dict": (lambda W: reference.score(W[0]), 1)}
    for mode, o in objective.items():
        methods[f"(b) ours {mode}, one per forward"] = (lambda W, o=o: o.score(W[0]), 1)
        for k in (4, 8):
            methods[f"(c) ours {mode}, K={k} per forward"] = (lambda W, o=o: o.score_many(W), k)
    rates = {name: [] for name in methods}
    for _ in range(args.repeats):
        candidates = rng.uniform(-1.5, 1.5, size=(args.evaluations, len(adapters)))
        for name, (score, per_call) in methods.items():
            score(candidates[:per_call])
            rates[name].append(evals_per_second(score, candidates, per_call)[0])
    print(f"lab T5 base (d_model 64, 2+2 layers); {len(adapters)} same-shaped modules "
          f"({', '.join(m.task for m in modules)}); 5 examples of {target.name}; {args.threads} threads")
    print(f"check: max |reference - ours lorahub| over 3 random w = {mismatch:.1e}")
    reference_rate = statistics.median(rates[next(iter(methods))])
    print(f"{'method (median of ' + str(args.repeats) + ')':<56}{'evals/s':>10}{'ms/eval':>9}{'vs (a)':>9}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<56}{rate:>10.1f}{1000 / rate:>9.2f}{rate / reference_rate:>8.2f}x")


if __name__ == "__main__":
    main()
