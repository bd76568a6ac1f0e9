"""TIES merge of 8 LoRA adapters at 4096 x 4096: ``loramgr merge --method ties`` vs PEFT's
``add_weighted_adapter(combination_type="ties_svd")``, side by side, one run.

Both sides get the same inputs (``svd_recompress.adapter_factors``: 8 adapters of rank 16, alpha
32, fixed random factors; weights 1/8 each, see ``inputs``) on ``--modules`` 4096 x 4096 projections, and compute the
same thing per module: trim each dense update to its ``--density`` largest entries, elect each
entry's sign on the weighted updates (``total``), average the agreeing entries (PEFT's disjoint
merge, loramgr's ``normalize=True``), and factor the result back to rank ``--rank`` by SVD.

- loramgr: ``combine(..., method="ties", rank=R, density=D, normalize=True)``, one module at a
  time (the 8 dense updates of one module, then a float64 SVD).
- PEFT: ``add_weighted_adapter(..., combination_type="ties_svd", density=D, svd_rank=R)`` on a
  model holding the 8 adapters (float32 SVD, ``full_matrices=True``).

Each side runs in its own interpreter; time is wall-clock and CPU time (all threads) of the merge
call, peak memory is the peak RSS during the call minus the RSS just before it (see
``svd_recompress.measure``). The run
also reports how far the two results are apart on the first module.

Usage: python benchmarks/merge_ties.py [--modules 2] [--density 0.2] [--rank 16] [--hidden 4096]
A dense 4096 x 4096 SVD takes about a minute on 2 cores, hence few modules by default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from svd_recompress import ADAPTERS, ALPHA, RANK, adapter_factors, attention_stack, relative_difference
from svd_recompress import measure as measure_wall


def measure(operation) -> dict:
    """``svd_recompress.measure`` plus the CPU seconds of the process (all threads) during the
    call: on a shared machine the wall-clock time depends on the neighbours, CPU time much less."""
    cpu = time.process_time()
    figures = measure_wall(operation)
    figures["cpu_seconds"] = time.process_time() - cpu
    return figures

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def modules(count: int) -> list[str]:
    """The first ``count`` attention projections of a Llama-like stack."""
    return [f"model.layers.{i // 4}.self_attn.{PROJECTIONS[i % 4]}" for i in range(count)]


def inputs(count: int, hidden: int):
    """The 8 adapters restricted to the first ``count`` modules, and uniform weights: PEFT elects
    the signs on the unweighted trimmed updates, loramgr (as mergekit) on the weighted ones; with
    equal weights the two are the same computation, so the results can be compared."""
    layers = -(-count // 4)
    factors, _ = adapter_factors(layers, hidden)
    keep = set(modules(count))
    return [{m: ab for m, ab in f.items() if m in keep} for f in factors], [1.0 / ADAPTERS] * ADAPTERS, layers


def run_ours(count: int, hidden: int, rank: int, density: float, dump: Path) -> dict:
    from loramgr.composer.align import combine
    from loramgr.composer.lora import LoraFactors, LoraWeights

    factors, weights, _ = inputs(count, hidden)
    config = {"base_model_name_or_path": "bench/7b-like", "r": RANK, "lora_alpha": ALPHA}
    adapters = [LoraWeights(config, {m: LoraFactors(A, B, ALPHA / RANK) for m, (A, B) in f.items()}, f"a{i}")
                for i, f in enumerate(factors)]
    figures = measure(lambda: combine(adapters, weights, method="ties", rank=rank, density=density,
                                      majority_sign="total", normalize=True))
    combined = figures.pop("result")
    first = combined.modules[modules(count)[0]]
    torch.save({"A": first.A[:rank], "B": first.B[:, :rank]}, dump)
    figures["truncation_error"] = combined.truncation_error
    return figures


def run_peft(count: int, hidden: int, rank: int, density: float, dump: Path) -> dict:
    from peft import LoraConfig, get_peft_model

    factors, weights, layers = inputs(count, hidden)
    model = attention_stack(layers, hidden)
    targets = modules(count)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, lora_dropout=0.0)
    names = [f"a{i}" for i in range(ADAPTERS)]
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    with torch.no_grad():
        for name, adapter in zip(names, factors):
            for module, (A, B) in adapter.items():
                layer = peft_model.base_model.model.get_submodule(module)
                layer.lora_A[name].weight.copy_(A)
                layer.lora_B[name].weight.copy_(B)
    figures = measure(lambda: peft_model.add_weighted_adapter(
        names, weights, "mix", combination_type="ties_svd", svd_rank=rank, density=density,
        majority_sign_method="total"))
    figures.pop("result")
    layer = peft_model.base_model.model.get_submodule(targets[0])
    torch.save({"A": layer.lora_A["mix"].weight.detach().clone(), "B": layer.lora_B["mix"].weight.detach().clone()},
               dump)
    return figures


def run_side(side: str, args, dump: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--modules", str(args.modules), "--hidden",
                          str(args.hidden), "--rank", str(args.rank), "--density", str(args.density),
                          "--dump", str(dump)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=2, help="4096 x 4096 modules to merge")
    parser.add_argument("--density", type=float, default=0.2, help="fraction of each update kept (TIES' default)")
    parser.add_argument("--rank", type=int, default=RANK, help="rank of the SVD factoring the result back")
    parser.add_argument("--hidden", type=int, default=4096, help="hidden size (smaller for a quick smoke run)")
    parser.add_argument("--side", choices=["ours", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_ours if args.side == "ours" else run_peft
        print(json.dumps(run(args.modules, args.hidden, args.rank, args.density, args.dump)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        dumps = {side: Path(tmp) / f"{side}.pt" for side in ("ours", "peft")}
        ours = run_side("ours", args, dumps["ours"])
        peft = run_side("peft", args, dumps["peft"])
        agreement = relative_difference(dumps["ours"], dumps["peft"])
    print(f"TIES merge of {ADAPTERS} adapters (r={RANK}), density {args.density}, to rank {args.rank}: "
          f"{args.modules} modules of {args.hidden}x{args.hidden}; torch threads: {torch.get_num_threads()}")
    print(f"{'':36}{'loramgr':>12}{'PEFT ties_svd':>15}{'PEFT/ours':>11}")
    for label, key in (("total time, wall-clock (s)", "seconds"), ("total time, CPU (s)", "cpu_seconds"),
                       ("peak extra memory (MiB)", "peak_extra_mib"),
                       ("resident inputs (MiB)", "inputs_rss_mib")):
        a, b = ours[key], peft[key]
        print(f"{label:36}{a:12.2f}{b:15.2f}{b / a if a else float('inf'):10.2f}x")
    print(f"CPU time per module (s): loramgr {ours['cpu_seconds'] / args.modules:.2f}, "
          f"PEFT {peft['cpu_seconds'] / args.modules:.2f}")
    print(f"relative truncation error (loramgr, all modules): {ours['truncation_error']:.4f}")
    print(f"agreement on {modules(args.modules)[0]}: ||ours - PEFT||_F / ||ours||_F = {agreement:.2e}")


if __name__ == "__main__":
    main()
