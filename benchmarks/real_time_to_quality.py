"""Time to quality on the real model: how long each weight search takes to reach the few-shot loss
that LoraHub's procedure reaches with its budget of 40, on SmolLM2-135M-Instruct and the real-model
lab's 22 modules, side by side in one run.

    python benchmarks/real_time_to_quality.py [--targets a,b] [--seeds 0,1,2] [--only words] [--no-held-out]
    python benchmarks/real_time_to_quality.py --slice      # smoke run on the CI slice (2 modules)

LoraHub's reference code is seq2seq only, so the reference here is LoraHub's procedure run by
loramgr itself (factor-wise ``lorahub`` mode, NGOpt, budget 40, start at w = 0, no screening, one
candidate per forward): its final loss is the target, its search time the yardstick. Shots are
drawn as in ``real_lab.py`` (5 per seed from the target's shot pool), in the lab's prompt format.

For each configuration: the search time until its best loss first reaches that seed's target, the
evaluations (forwards, or forward+backward steps) that took, its final loss against the
reference's, and, unless ``--no-held-out``, exact match on the target's 30 unseen test examples of
the exported adapter merged into the base model (the reference's beside it). A configuration
that never reaches the target counts its whole search time and is marked. Configurations take
turns within each seed, so a busy machine slows them alike. Times are this process's CPU seconds
by default (steady on a shared machine; all threads summed, so about twice the wall time on two
idle cores), ``--clock wall`` for the wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from time_to_quality import LORAMGR_DEFAULT, Config, Run, summary_lines, wanted  # noqa: E402
from loramgr.composer.examples import Example  # noqa: E402
from loramgr.composer.gradient import search_weights_gradient  # noqa: E402
from loramgr.composer.lora import load_lora  # noqa: E402
from loramgr.composer.objective import tokenize_examples  # noqa: E402
from loramgr.composer.search import search_weights  # noqa: E402
from loramgr.examples.reallab.build import LabConfig, build_reallab, load_base, slice_config  # noqa: E402
from loramgr.examples.reallab.table import SHOTS, evaluate, export_weights, merged_copy  # noqa: E402
from loramgr.examples.reallab.tasks import sample_shots  # noqa: E402

BUDGET, BOUNDS, L1 = 40, (-1.5, 1.5), 0.05  # LoraHub's procedure
GRADIENT_STEPS = 20  # as real_lab.py's gradient rows: a step is a forward and a backward
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}

CONFIGS = [
    LORAMGR_DEFAULT,
    Config("NGOpt w1 screened (the default before)", options=dict(optimizer="NGOpt", num_workers=1, screen=True,
                                                                  budget=BUDGET)),
    Config("gradient module", "gradient", dict(granularity="module", budget=GRADIENT_STEPS)),
    Config("gradient module no-screen", "gradient", dict(granularity="module", screen=False, budget=GRADIENT_STEPS)),
    Config("gradient block", "gradient", dict(granularity="block", budget=GRADIENT_STEPS)),
    Config("gradient block no-screen", "gradient", dict(granularity="block", screen=False, budget=GRADIENT_STEPS)),
    Config("gradient block slope-screen 3", "gradient", dict(granularity="block", screen_top=3, budget=GRADIENT_STEPS)),
    Config("gradient block slope-screen 1", "gradient", dict(granularity="block", screen_top=1, budget=GRADIENT_STEPS)),
    # Stochastic steps: each step back-propagates k of the 5 shots (about a quarter of the cost at k = 1); every
    # pass over the shots ends with one forward of all 5, the only losses the search keeps.
    Config("gradient block slope-1 1 shot/step", "gradient", dict(granularity="block", screen_top=1,
                                                                   shots_per_step=1, budget=GRADIENT_STEPS)),
    Config("gradient block slope-1 2 shots/step", "gradient", dict(granularity="block", screen_top=1,
                                                                    shots_per_step=2, budget=GRADIENT_STEPS)),
]


def timed_search(config: Config | None, model, adapters, batch, seed: int, target: float | None, clock,
                 steps: int | None = None):
    """(run, result): one search, and when its best loss first came within float noise of ``target``.
    ``config=None`` is the reference: LoraHub's procedure."""
    reached: dict[str, float] = {}
    trace: list[tuple[int, float, float]] = []
    started = clock()

    def callback(evaluations: int, best: float) -> None:
        trace.append((evaluations, clock() - started, best))
        if target is not None and "seconds" not in reached and best <= target + 1e-4 * max(1.0, abs(target)):
            reached.update(seconds=clock() - started, evaluations=evaluations)

    common = dict(seed=seed, l1=L1, bounds=BOUNDS, callback=callback)
    if config is None:
        found = search_weights(model, adapters, batch, mode="lorahub", optimizer="NGOpt", budget=BUDGET,
                               num_workers=1, screen=False, **common)
    elif config.kind == "gradient":
        options = dict(config.options, budget=steps) if steps else dict(config.options)
        if options.get("shots_per_step"):  # as many passes over the shots as full steps elsewhere
            options["budget"] *= -(-SHOTS // options["shots_per_step"])
        found = search_weights_gradient(model, adapters, batch, mode="delta", **options, **common)
    else:
        found = search_weights(model, adapters, batch, mode="delta", **config.options, **common)
    seconds = clock() - started
    return Run(reached.get("seconds"), reached.get("evaluations"), seconds, found.evaluations, found.loss,
               trace=trace), found


def held_out(model, tokenizer, lab, target: str, adapters, found, mode: str) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory(prefix="loramgr-ttq-") as scratch:
        folder = export_weights(adapters, found.weights, Path(scratch) / "c", mode=mode,
                                module_weights=found.module_weights)
        merged = merged_copy(model, folder)
        return evaluate(merged, tokenizer, lab, target)


def bench_target(lab, target: str, args, model, tokenizer, adapters, summary) -> list[str]:
    fmt = lab.config.prompt_format
    rows: dict[str, list[Run]] = defaultdict(list)
    references: list[Run] = []
    for seed in args.seeds:
        shots = sample_shots(lab.splits[target].shots, SHOTS, seed)
        batch = tokenize_examples(model, tokenizer, [Example(s.input, s.output) for s in shots], prompt_format=fmt)
        ref_run, ref_found = timed_search(None, model, adapters, batch, seed, None, args.clock)
        goal = min([ref_found.loss] + [e.loss for e in ref_found.history])
        if args.held_out:
            ref_run.accuracy = held_out(model, tokenizer, lab, target, adapters, ref_found, "lorahub")[0]
        references.append(ref_run)
        for config in CONFIGS:
            if args.only and not wanted(config.name, args.only):
                continue
            run, found = timed_search(config, model, adapters, batch, seed, goal, args.clock, args.steps)
            if args.held_out:
                run.accuracy = held_out(model, tokenizer, lab, target, adapters, found, "delta")[0]
                run.accuracy_vs_reference = run.accuracy - ref_run.accuracy
            run.loss_vs_reference = run.loss - ref_run.loss
            run.time_ratio = (run.reach_seconds if run.reach_seconds is not None else run.seconds) / ref_run.seconds
            rows[config.name].append(run)
            summary[(config.name, "delta")].append(run)
            if args.histories is not None:
                args.histories.append(dict(config=config.name, target=target, seed=seed, goal=goal,
                                           reference_seconds=ref_run.seconds, reference_loss=ref_run.loss,
                                           seconds=run.seconds, loss=run.loss, accuracy=run.accuracy,
                                           reference_accuracy=ref_run.accuracy, trace=run.trace))
        print(f"  {target} seed {seed}: reference {ref_run.seconds:.1f} s, loss {ref_run.loss:.4f}; " + "; ".join(
            f"{name} x{runs[-1].time_ratio:.3f} loss {runs[-1].loss:.4f}" for name, runs in rows.items()),
            file=sys.stderr, flush=True)
    median = statistics.median
    lines = [f"-- target {target}: {len(adapters)} modules; reference {median(r.seconds for r in references):.1f} s, "
             f"final loss {median(r.loss for r in references):.4f}"
             + (f", held-out EM {median(r.accuracy for r in references):.3f}" if args.held_out else "")]
    header = f"{'configuration':<38}{'reached':>8}{'t->ref s':>10}{'x ref':>8}{'evals':>7}{'total s':>9}" \
             f"{'final':>9}{'d final':>9}{'EM':>7}"
    lines += [header, "-" * len(header)]
    for name, runs in rows.items():
        reached = [r for r in runs if r.reach_seconds is not None]
        lines.append(
            f"{name:<38}{len(reached):>4}/{len(runs):<3}"
            f"{median(r.reach_seconds if r.reach_seconds is not None else r.seconds for r in runs):>10.2f}"
            f"{median(r.time_ratio for r in runs):>8.3f}"
            f"{median(r.reach_evaluations or r.evaluations for r in runs):>7.0f}"
            f"{median(r.seconds for r in runs):>9.2f}{median(r.loss for r in runs):>9.4f}"
            f"{median(r.loss_vs_reference for r in runs):>+9.4f}"
            + (f"{median(r.accuracy for r in runs):>7.3f}" if args.held_out else f"{'-':>7}"))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=None, help="comma-separated target tasks (default: all of the lab's)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of shot choice")
    parser.add_argument("--only", default="",
                        help="comma-separated words: run the configurations named with one (=NAME: that name only)")
    parser.add_argument("--no-held-out", dest="held_out", action="store_false",
                        help="skip the held-out exact match (the searches only)")
    parser.add_argument("--slice", action="store_true", help="the CI test's 2-module slice: a smoke run")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help=f"steps of every gradient configuration (default {GRADIENT_STEPS}, or its own)")
    parser.add_argument("--histories", default=None, metavar="FILE",
                        help="also write each run's trace (evaluations, seconds, best loss after each) to this "
                             "JSON file, to study early stopping offline")
    args = parser.parse_args(argv)
    histories_path, args.histories = args.histories, [] if args.histories else None
    if args.threads:
        torch.set_num_threads(args.threads)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    clock_name, args.clock = args.clock, CLOCKS[args.clock]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config = slice_config(modules=2, targets=1, steps=3, oracle_steps=2, test_size=6) if args.slice else LabConfig()
    lab = build_reallab(config, device=args.device, say=lambda m: print(m, file=sys.stderr))
    model, tokenizer = load_base(lab.base_dir, args.device)
    adapters = [load_lora(lab.module_dir(t), label=t) for t in lab.config.upstream]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock_name} clock, load average "
          f"{os.getloadavg()[0]:.1f}; {len(adapters)} modules, {SHOTS} shots, {lab.config.prompt_format} format; "
          f"gradient configurations: {args.steps or GRADIENT_STEPS} steps, delta mode", flush=True)
    summary: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for target in args.targets.split(",") if args.targets else lab.config.targets:
        for line in bench_target(lab, target, args, model, tokenizer, adapters, summary):
            print(line, flush=True)
    for line in summary_lines("real model", summary):
        print(line, flush=True)
    if histories_path:
        Path(histories_path).write_text(json.dumps(args.histories, indent=1) + "\n")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
