"""Time to quality: how long each search takes to reach the few-shot loss that LoraHub's own
procedure reaches with its budget of 40, side by side in one run.

    python benchmarks/time_to_quality.py [--lab-dir DIR] [--families t5,llama] [--seeds 3]
                                         [--targets first|kinds|all] [--modes delta,lorahub]

On the offline lab, per held-out target (the first of each kind by default): 5 few-shot examples,
and as candidates the group of same-shaped modules (LoraHub's loop sums state dicts key by key)
that holds the target's module tasks, else the largest group (eval_speed_lab.py's setting).

- reference: LoraHub's procedure with LoraHub's scoring loop (the state dicts summed key by key
  and loaded with ``set_peft_model_state_dict`` per candidate; eval_speed.py), NGOpt, budget 40,
  start at w = 0, bounds [-1.5, 1.5], L1 0.05. Its loss (objective incl. L1) is the target: the
  better of its best evaluation and its recommendation, seed by seed. Its time: the 40 evaluations.
- loramgr's configurations, each in the modes asked for: the nevergrad search (workers, optimizer,
  screening, early stopping) and the gradient search (per module, per layer block).

For each: the search time until the best loss first reaches that seed's target (injection and
the w = 0 score included), the evaluations that took, the final loss, and exact match on the
target's held-out test set at the final weights. Medians over seeds; the configurations take
turns within each seed so a busy machine slows them alike. A configuration that never reaches
the target is counted as its full search time and marked. Threads: 1 (the lab's models are tiny).
Times are this process's CPU seconds by default (``--clock wall`` for the wall clock): with one
thread they equal the wall clock on an idle machine, and they stay steady on a busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nevergrad as ng  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval_speed import LoraHubReference  # noqa: E402
from loramgr.composer.base_model import load_base_model  # noqa: E402
from loramgr.composer.examples import read_examples, sample_examples  # noqa: E402
from loramgr.composer.gradient import search_weights_gradient  # noqa: E402
from loramgr.composer.injection import inject_composite  # noqa: E402
from loramgr.composer.lora import load_lora  # noqa: E402
from loramgr.composer.objective import tokenize_examples  # noqa: E402
from loramgr.composer.options import ComposeOptions  # noqa: E402
from loramgr.composer.search import _metamodel_numpy_compat, search_weights  # noqa: E402
from loramgr.examples.lab.build import build_lab  # noqa: E402
from loramgr.examples.lab.evaluate import exact_match  # noqa: E402

BUDGET, BOUNDS, L1 = 40, (-1.5, 1.5), 0.05  # LoraHub's procedure
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]  # --clock; CPU time of this process is steadier on a shared machine


@dataclass(frozen=True)
class Config:
    name: str
    kind: str = "nevergrad"  # or "gradient"
    options: dict = field(default_factory=dict)


_DEFAULT = ComposeOptions()  # compose's defaults (the search itself is the gradient one)
# compose at its defaults, as the gradient search's arguments; real_time_to_quality.py runs it too
LORAMGR_DEFAULT = Config("loramgr default", "gradient", dict(granularity=_DEFAULT.granularity, budget=_DEFAULT.budget,
                                                              patience=_DEFAULT.stop_after, screen=_DEFAULT.screen,
                                                              screen_top=_DEFAULT.screen_top))
CONFIGS = [
    Config("NGOpt w1 no-screen (faithful)", options=dict(optimizer="NGOpt", num_workers=1, screen=False)),
    Config("NGOpt w1 screened", options=dict(optimizer="NGOpt", num_workers=1, screen=True)),
    Config("NGOpt w8 screened", options=dict(optimizer="NGOpt", num_workers=8, screen=True)),
    Config("CMA w8 screened", options=dict(optimizer="CMA", num_workers=8, screen=True)),
    Config("TwoPointsDE w8 screened", options=dict(optimizer="TwoPointsDE", num_workers=8, screen=True)),
    Config("NGOpt w1 screened patience 10", options=dict(optimizer="NGOpt", num_workers=1, screen=True,
                                                          patience=10, tol=1e-3)),
    Config("TwoPointsDE w8 screened patience 16", options=dict(optimizer="TwoPointsDE", num_workers=8,
                                                                screen=True, patience=16, tol=1e-3)),
    Config("gradient module", "gradient", dict(granularity="module")),
    Config("gradient block", "gradient", dict(granularity="block")),
    Config("gradient block patience 8", "gradient", dict(granularity="block", patience=8, tol=1e-3)),
    # Stochastic steps, as many passes over the 5 shots as the full-batch rows take steps (40).
    Config("gradient block 1 shot/step", "gradient", dict(granularity="block", shots_per_step=1, budget=5 * BUDGET)),
    Config("gradient block 2 shots/step", "gradient", dict(granularity="block", shots_per_step=2, budget=3 * BUDGET)),
    LORAMGR_DEFAULT,
]


@dataclass
class Run:
    reach_seconds: float | None  # None: never reached the target
    reach_evaluations: int | None
    seconds: float
    evaluations: int
    loss: float
    accuracy: float | None = None
    loss_vs_reference: float = 0.0  # final loss minus this seed's reference's
    accuracy_vs_reference: float = 0.0
    time_ratio: float = 0.0  # time to the target (or the whole search) / the reference's search time
    trace: list = field(default_factory=list)  # (evaluations, seconds, best loss) after each forward


def reference_inputs(tokenizer, examples, *, seq2seq: bool) -> dict[str, torch.Tensor]:
    """LoraHub's batch: padded rows with the labels its model computes the loss from."""
    if seq2seq:
        encoded = tokenizer([e.input for e in examples], padding=True, return_tensors="pt")
        labels = tokenizer([e.output for e in examples], padding=True, return_tensors="pt")
        ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": ids}
    rows, targets = [], []
    for example in examples:  # as tokenize_examples: input (with its specials) + output + eos
        prompt = tokenizer(example.input)["input_ids"]
        answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        targets.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([t + [-100] * (width - len(t)) for t in targets])}


def run_reference(reference: LoraHubReference, n: int, seed: int) -> tuple[float, Run, np.ndarray]:
    """LoraHub's loop: ``NGOpt(...).minimize(get_score)`` from w = 0; (target, run, weights)."""
    parametrization = ng.p.Array(init=np.zeros(n), lower=BOUNDS[0], upper=BOUNDS[1])
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=BUDGET)
    losses = []

    def score(weights):
        losses.append(reference.score(weights))
        return losses[-1]

    started = CLOCK()
    with _metamodel_numpy_compat():
        recommendation = optimizer.minimize(score)
    seconds = CLOCK() - started
    recommended = reference.score(recommendation.value)
    target = min(min(losses), recommended)
    return target, Run(seconds, len(losses), seconds, len(losses), recommended), np.asarray(recommendation.value)


def run_ours(config: Config, mode: str, model, adapters, batch, seed: int, target: float):
    reached: dict[str, float] = {}
    started = CLOCK()

    def callback(evaluations: int, best: float) -> None:
        # Equal up to float noise between the two implementations (the rescore tolerance).
        if "seconds" not in reached and best <= target + 1e-4 * max(1.0, abs(target)):
            reached.update(seconds=CLOCK() - started, evaluations=evaluations)

    options = dict(budget=BUDGET) | config.options  # a configuration may name its own budget
    if config.kind == "gradient":
        found = search_weights_gradient(model, adapters, batch, mode=mode, seed=seed, l1=L1, bounds=BOUNDS,
                                        callback=callback, **options)
    else:
        found = search_weights(model, adapters, batch, mode=mode, seed=seed, l1=L1, bounds=BOUNDS,
                               callback=callback, **options)
    seconds = CLOCK() - started
    run = Run(reached.get("seconds"), reached.get("evaluations"), seconds, found.evaluations, found.loss)
    return run, found


def held_out_accuracy(model, tokenizer, adapters, mode, weights, module_weights, test) -> float:
    with inject_composite(model, adapters, mode=mode) as composite:
        if module_weights:
            with torch.no_grad():
                composite.set_weight_tensors({path: torch.tensor([module_weights[path]], dtype=torch.float32)
                                              for path in composite.modules})
        else:
            composite.set_weights(weights)
        return exact_match(model, tokenizer, [(e.input, e.output) for e in test])


def module_group(modules, target) -> list:
    """The same-shaped modules (LoraHub's loop needs one shape) that hold the target's module
    tasks, else the largest such group."""
    groups = defaultdict(list)
    for module in modules:
        config = json.loads((module.path / "adapter_config.json").read_text())
        groups[(module.rank, tuple(sorted(config["target_modules"])))].append(module)
    holding = [g for g in groups.values() if set(target.module_tasks) <= {m.task for m in g}]
    return max(holding or groups.values(), key=len)


def chosen_targets(lab, family: str, which: str):
    targets = lab.targets(family)
    if which == "all":
        return targets
    if which == "kinds":
        return [next(t for t in targets if t.kind == kind) for kind in sorted({t.kind for t in targets})]
    return [next(t for t in targets if t.kind == 1)]


def bench_target(lab, family: str, target, args, model, tokenizer, summary) -> list[str]:
    modules = module_group(lab.modules(family), target)
    adapters = [load_lora(m.path, label=m.task) for m in modules]
    n = len(adapters)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    examples = sample_examples(read_examples(target.few_shot), 5, 0)
    test = read_examples(target.test)[:args.test_rows]
    batch = tokenize_examples(model, tokenizer, examples)
    reference = LoraHubReference(load_base_model(str(lab.base_dir(family)), device="cpu")[0],
                                 [m.path for m in modules], reference_inputs(tokenizer, examples, seq2seq=seq2seq))
    base_loss = reference.score(np.zeros(n))
    rows: dict[tuple[str, str], list[Run]] = defaultdict(list)
    references: list[Run] = []
    for seed in args.seeds:
        goal, ref_run, ref_weights = run_reference(reference, n, seed)
        ref_run.accuracy = held_out_accuracy(model, tokenizer, adapters, "lorahub", ref_weights, None, test)
        references.append(ref_run)
        for config in CONFIGS:
            if args.only and not wanted(config.name, args.only):
                continue
            for mode in args.modes:
                if config.name.endswith("(faithful)") and mode != "lorahub":
                    continue  # the faithful reproduction is LoraHub's own mode
                run, found = run_ours(config, mode, model, adapters, batch, seed, goal)
                run.accuracy = held_out_accuracy(model, tokenizer, adapters, mode, found.weights,
                                                 found.module_weights, test)
                run.loss_vs_reference = run.loss - ref_run.loss
                run.accuracy_vs_reference = run.accuracy - ref_run.accuracy
                run.time_ratio = (run.reach_seconds if run.reach_seconds is not None else run.seconds) \
                    / ref_run.seconds
                rows[(config.name, mode)].append(run)
                summary[(config.name, mode)].append(run)
    ref_seconds = statistics.median(r.seconds for r in references)
    lines = [f"-- {family} target {target.name} (kind {target.kind}, from {', '.join(target.module_tasks)}): "
             f"{n} modules of rank {modules[0].rank} ({', '.join(m.task for m in modules)}); loss at w = 0 "
             f"{base_loss:.4f}",
             f"reference: {ref_seconds:.3f} s search ({1000 * ref_seconds / BUDGET:.1f} ms/eval), final loss "
             f"{statistics.median(r.loss for r in references):.4f}, held-out EM "
             f"{statistics.median(r.accuracy for r in references):.3f}"]
    header = (f"{'configuration':<38}{'mode':<9}{'reached':>8}{'t->ref s':>10}{'x ref':>8}{'evals':>7}"
              f"{'total s':>9}{'final':>9}{'d final':>9}{'EM':>7}")
    lines += [header, "-" * len(header)]
    for (name, mode), runs in rows.items():
        reached = [r for r in runs if r.reach_seconds is not None]
        reach_s = statistics.median(r.reach_seconds if r.reach_seconds is not None else r.seconds for r in runs)
        evals = statistics.median(r.reach_evaluations if r.reach_evaluations is not None else r.evaluations
                                  for r in runs)
        lines.append(f"{name:<38}{mode:<9}{len(reached):>4}/{len(runs):<3}{reach_s:>10.3f}"
                     f"{statistics.median(r.time_ratio for r in runs):>8.3f}{evals:>7.0f}"
                     f"{statistics.median(r.seconds for r in runs):>9.3f}{statistics.median(r.loss for r in runs):>9.4f}"
                     f"{statistics.median(r.loss_vs_reference for r in runs):>+9.4f}"
                     f"{statistics.median(r.accuracy for r in runs):>7.3f}")
    return lines


def summary_lines(family: str, summary) -> list[str]:
    header = (f"{'configuration':<38}{'mode':<9}{'reached':>9}{'<=0.1x':>8}{'x ref':>8}{'worse':>7}"
              f"{'worst d':>9}{'d EM':>8}")
    lines = [f"== {family}, all targets and seeds: reached = runs that reached the reference's loss; <=0.1x = runs "
             "that did so in a tenth of its time or less; x ref = median time ratio; worse = runs whose final loss "
             "is above the reference's (+1e-4); worst d = the largest final-loss excess; d EM = median held-out "
             "EM minus the reference's", header, "-" * len(header)]
    for (name, mode), runs in summary.items():
        reached = sum(r.reach_seconds is not None for r in runs)
        fast = sum(r.reach_seconds is not None and r.time_ratio <= 0.1 for r in runs)
        worse = sum(r.loss_vs_reference > 1e-4 for r in runs)
        lines.append(f"{name:<38}{mode:<9}{reached:>5}/{len(runs):<3}{fast:>8}"
                     f"{statistics.median(r.time_ratio for r in runs):>8.3f}{worse:>7}"
                     f"{max(r.loss_vs_reference for r in runs):>+9.4f}"
                     f"{statistics.median(r.accuracy_vs_reference for r in runs):>+8.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=Path.home() / ".cache" / "loramgr-lab")
    parser.add_argument("--size", default="default")
    parser.add_argument("--families", default="t5,llama")
    parser.add_argument("--seeds", type=int, default=3, help="runs per configuration and target (seeds 0..N-1)")
    parser.add_argument("--targets", choices=["first", "kinds", "all"], default="kinds",
                        help="first: the first kind-1 target (eval_speed_lab.py's); kinds: the first of each kind")
    parser.add_argument("--modes", default="delta,lorahub")
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this process's CPU seconds (steady on a busy machine); wall: wall clock")
    parser.add_argument("--only", default="",
                        help="comma-separated words: run the configurations named with one (=NAME: that name only)")
    args = parser.parse_args()
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    args.seeds = list(range(args.seeds))
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import warnings

    warnings.filterwarnings("ignore")
    lab = build_lab(args.lab_dir / f"{args.size}-seed0", size=args.size, seed=0)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, nevergrad {ng.__version__}, {args.threads} thread(s), {args.clock} clock; "
          f"load average {load:.1f}")
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        model, tokenizer = load_base_model(str(lab.base_dir(family)), device="cpu")
        summary: dict[tuple[str, str], list[Run]] = defaultdict(list)
        print(f"== {family} ({'seq2seq' if model.config.is_encoder_decoder else 'causal'}); 5 shots; "
              f"{len(args.seeds)} seeds; medians over seeds", flush=True)
        for target in chosen_targets(lab, family, args.targets):
            for line in bench_target(lab, family, target, args, model, tokenizer, summary):
                print(line, flush=True)
        for line in summary_lines(family, summary):
            print(line, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def wanted(name: str, words: list[str]) -> bool:
    """Whether ``--only`` picks configuration ``name``: a word it contains, or ``=name`` exactly."""
    return any(name == word[1:] if word.startswith("=") else word in name for word in words)


if __name__ == "__main__":
    main()
