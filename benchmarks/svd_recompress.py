"""SVD re-compression of 8 LoRA adapters at 7B-like shapes: loramgr vs PEFT, side by side.

Both sides get the same inputs: 8 adapters of rank 16 on q/k/v/o_proj (4096 x 4096) of
``--layers`` decoder layers, with fixed random factors, alpha 32 and fixed weights; both produce
the best rank-``--rank`` approximation of ``sum_i w_i * s_i * B_i @ A_i`` per module.

- loramgr: ``combine(..., method="delta", rank=k)`` — QR of the stacked factors, SVD of a
  128 x 128 core; no ``out x in`` matrix.
- PEFT: ``add_weighted_adapter(..., combination_type="svd", svd_rank=k)`` — per module, 8 dense
  4096 x 4096 deltas, their weighted sum and a dense SVD.

Each side runs in its own subprocess so the peak memory figures do not mix. Peak memory is the
process's peak RSS (``VmHWM`` from /proc/self/status) reset just before the operation
(``clear_refs``), minus the RSS at that moment: the extra memory the operation needs on top of
its inputs (PEFT's base-model weights are allocated but never touched, so they are not
resident). The run also checks that both sides produce the same update on the first module.

Usage: python benchmarks/svd_recompress.py [--layers 1] [--rank 16]
The dense SVD of 4096 x 4096 is slow on a few cores (over a minute per module on 2 cores),
hence the small default; the 32-layer figures are extrapolated and labelled as such.
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

ADAPTERS, RANK, ALPHA, HIDDEN, FULL_LAYERS = 8, 16, 32, 4096, 32
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def module_paths(layers: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.{p}" for i in range(layers) for p in PROJECTIONS]


def adapter_factors(layers: int, hidden: int, seed: int = 0):
    """Per adapter: {module: (A, B)}, the same on both sides; plus the weights."""
    gen = torch.Generator().manual_seed(seed)
    adapters = [
        {m: (torch.randn(RANK, hidden, generator=gen) / hidden**0.5, torch.randn(hidden, RANK, generator=gen) * 0.01)
         for m in module_paths(layers)}
        for _ in range(ADAPTERS)
    ]
    weights = (torch.rand(ADAPTERS, generator=gen) * 3 - 1.5).tolist()
    return adapters, weights


def memory_kib() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0])
    return fields


def measure(operation) -> dict:
    """Run ``operation`` with the peak-RSS mark reset first; time and extra peak memory."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    before = memory_kib()["VmRSS"]
    start = time.perf_counter()
    result = operation()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_extra_mib": (memory_kib()["VmHWM"] - before) / 1024,
            "inputs_rss_mib": before / 1024, "result": result}


def run_ours(layers: int, hidden: int, rank: int, dump: Path) -> dict:
    from loramgr.composer.align import combine
    from loramgr.composer.lora import LoraFactors, LoraWeights

    factors, weights = adapter_factors(layers, hidden)
    config = {"base_model_name_or_path": "bench/7b-like", "r": RANK, "lora_alpha": ALPHA}
    adapters = [LoraWeights(config, {m: LoraFactors(A, B, ALPHA / RANK) for m, (A, B) in f.items()}, f"a{i}")
                for i, f in enumerate(factors)]
    figures = measure(lambda: combine(adapters, weights, method="delta", rank=rank))
    combined = figures.pop("result")
    first = combined.modules[module_paths(layers)[0]]
    torch.save({"A": first.A, "B": first.B}, dump)
    figures["truncation_error"] = combined.truncation_error
    return figures


def run_peft(layers: int, hidden: int, rank: int, dump: Path) -> dict:
    from peft import LoraConfig, get_peft_model

    factors, weights = adapter_factors(layers, hidden)
    model = attention_stack(layers, hidden)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(PROJECTIONS), lora_dropout=0.0)
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
        names, weights, "mix", combination_type="svd", svd_rank=rank))
    figures.pop("result")
    layer = peft_model.base_model.model.get_submodule(module_paths(layers)[0])
    torch.save({"A": layer.lora_A["mix"].weight.detach().clone(), "B": layer.lora_B["mix"].weight.detach().clone()}, dump)
    return figures


def attention_stack(layers: int, hidden: int) -> torch.nn.Module:
    """A model with Llama-7B's attention projections and nothing else. The weights are allocated
    but never touched (PEFT's SVD merge does not read them), so they cost no resident memory."""
    def layer():
        attn = torch.nn.Module()
        for p in PROJECTIONS:
            setattr(attn, p, torch.nn.Linear(hidden, hidden, bias=False, device="meta"))
        block = torch.nn.Module()
        block.self_attn = attn
        return block

    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList(layer() for _ in range(layers))
    return model.to_empty(device="cpu")


def run_side(side: str, layers: int, hidden: int, rank: int, dump: Path) -> dict:
    """Run one side in a fresh interpreter and return its figures."""
    out = subprocess.run([sys.executable, __file__, "--side", side, "--layers", str(layers), "--hidden", str(hidden),
                          "--rank", str(rank),
                          "--dump", str(dump)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def relative_difference(ours: Path, peft: Path) -> float:
    """||B1 A1 - B2 A2||_F / ||B1 A1||_F from the factors (no 4096 x 4096 matrix)."""
    from loramgr.composer.align import factored_energy

    a, b = torch.load(ours), torch.load(peft)
    diff = factored_energy(torch.cat([a["A"], b["A"]]), torch.cat([a["B"], -b["B"]], dim=1))
    return (max(diff, 0.0) / factored_energy(a["A"], a["B"])) ** 0.5


def report(layers: int, hidden: int, rank: int, ours: dict, peft: dict, agreement: float) -> None:
    modules, full_modules = layers * len(PROJECTIONS), FULL_LAYERS * len(PROJECTIONS)
    print(f"SVD re-compression of {ADAPTERS} adapters (r={RANK}) to rank {rank}: {layers} layer(s) x "
          f"{'/'.join(PROJECTIONS)} = {modules} modules of {hidden}x{hidden}; torch threads: {torch.get_num_threads()}")
    rows = [
        ("measured: total time (s)", ours["seconds"], peft["seconds"]),
        ("measured: time per module (s)", ours["seconds"] / modules, peft["seconds"] / modules),
        ("measured: peak extra memory (MiB)", ours["peak_extra_mib"], peft["peak_extra_mib"]),
        ("measured: resident inputs (MiB)", ours["inputs_rss_mib"], peft["inputs_rss_mib"]),
        (f"EXTRAPOLATED to {FULL_LAYERS} layers: time (s)",
         ours["seconds"] / modules * full_modules, peft["seconds"] / modules * full_modules),
    ]
    print(f"{'':44}{'loramgr':>12}{'PEFT svd':>12}{'PEFT/ours':>11}")
    for label, a, b in rows:
        print(f"{label:44}{a:12.3f}{b:12.3f}{b / a if a else float('inf'):10.1f}x")
    output_mib = 2 * rank * hidden * 4 / 2**20
    print(f"EXTRAPOLATED peak memory at {FULL_LAYERS} layers: the measured peak is one module's working set, so it "
          f"stays about the same; the outputs add {output_mib:.2f} MiB per module on each side")
    print(f"relative truncation error (loramgr): {ours['truncation_error']:.4f}")
    print(f"agreement on {module_paths(layers)[0]}: ||ours - PEFT||_F / ||ours||_F = {agreement:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1, help="decoder layers to merge (4 modules each)")
    parser.add_argument("--rank", type=int, default=RANK, help="target rank of the re-compression")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden size (smaller for a quick smoke run)")
    parser.add_argument("--side", choices=["ours", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_ours if args.side == "ours" else run_peft
        print(json.dumps(run(args.layers, args.hidden, args.rank, args.dump)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        dumps = {side: Path(tmp) / f"{side}.pt" for side in ("ours", "peft")}
        ours = run_side("ours", args.layers, args.hidden, args.rank, dumps["ours"])
        peft = run_side("peft", args.layers, args.hidden, args.rank, dumps["peft"])
        report(args.layers, args.hidden, args.rank, ours, peft, relative_difference(dumps["ours"], dumps["peft"]))


if __name__ == "__main__":
    main()
