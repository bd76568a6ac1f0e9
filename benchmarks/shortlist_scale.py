"""Shortlisting at hub scale: seconds and peak memory against the number of adapters in the hub.

    python benchmarks/shortlist_scale.py [--sizes 50,200,500] [--family t5] [--k 20] [--per-forward 8]

For each pool size, in a fresh process (so one size's memory cannot hide another's): a real local
registry in a temporary home is filled with seeded variants of the offline lab's modules (each
a lab module's factors plus seeded noise, all ranks and target sets of the lab), then
``shortlist(model, batch, hub_pool(registry, base=...))`` scores every one of them alone on 5
few-shot examples of a lab target (K per batched forward) and keeps the best ``k``. The pulls
from the hub are part of the shortlist's time, as in ``compose --all``; the pushes are not.

Memory: the peak resident set during the shortlist minus the resident set just before it (the
kernel's high-water mark, reset after a warm-up on one adapter of each lab shape), and, in a
second pass, tracemalloc's peak of Python objects (the hub's version records are listed once,
a few KB each: metadata grows with the pool, factors do not);
next to it, the bytes of all the pool's factors, which a shortlist that held every adapter at
once would need. Linear cost: seconds per adapter stays flat (CPU seconds are the steadier figure
on a shared machine); flat memory: the peak does not grow with the pool.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def write_variants(modules, out: Path, count: int) -> list[Path]:
    """``count`` adapters: lab module ``i % len(modules)`` plus noise seeded by ``i``."""
    import torch
    from safetensors.torch import load_file, save_file

    templates = [(m, load_file(str(m.path / "adapter_model.safetensors"))) for m in modules]
    folders = []
    for i in range(count):
        module, tensors = templates[i % len(templates)]
        generator = torch.Generator().manual_seed(i)
        folder = out / f"{module.task}-v{i}"
        folder.mkdir(parents=True)
        shutil.copy(module.path / "adapter_config.json", folder)
        save_file({key: t + 0.3 * t.std() * torch.randn(t.shape, generator=generator) for key, t in tensors.items()},
                  str(folder / "adapter_model.safetensors"))
        folders.append(folder)
    return folders


def one_size(args) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    from loramgr.composer.base_model import load_base_model
    from loramgr.composer.examples import read_examples, sample_examples
    from loramgr.composer.objective import tokenize_examples
    from loramgr.composer.shortlist import hub_pool, shortlist
    from loramgr.examples.lab.build import build_lab
    from loramgr.hub.registry import Registry
    from loramgr.hub.settings import Settings

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    lab = build_lab(args.lab_dir / f"{args.size}-seed0", size=args.size, seed=0)
    with tempfile.TemporaryDirectory(prefix="shortlist-scale-") as tmp:
        folders = write_variants(lab.modules(args.family), Path(tmp) / "adapters", args.one)
        pool_bytes = sum((f / "adapter_model.safetensors").stat().st_size for f in folders)
        registry = Registry(Settings.load(home=str(Path(tmp) / "home")))
        started = time.perf_counter()
        for i, folder in enumerate(folders):
            registry.push(folder, name=f"pool/{folder.name}", task=folder.name.split("-v")[0])
        push_seconds = time.perf_counter() - started
        shutil.rmtree(Path(tmp) / "adapters")
        model, tokenizer = load_base_model(str(lab.base_dir(args.family)), device="cpu")
        target = next(t for t in lab.targets(args.family) if t.kind == 1)
        batch = tokenize_examples(model, tokenizer, sample_examples(read_examples(target.few_shot), 5, 0))
        base = lab.base_id(args.family)
        # Warm-up on one adapter of every lab shape: kernels, the allocator's pools, the first pulls.
        warm = len(lab.modules(args.family))
        shortlist(model, batch, itertools.islice(hub_pool(registry, base=base), warm), k=1,
                  per_forward=args.per_forward)
        gc.collect()
        reset = reset_peak_rss()
        before = rss_kib()
        started, cpu = time.perf_counter(), time.process_time()
        top = shortlist(model, batch, hub_pool(registry, base=base), k=args.k, per_forward=args.per_forward)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        peak = rss_kib("VmHWM")
        # Python objects, in a second pass: tracemalloc's own bookkeeping would inflate the RSS above.
        tracemalloc.start()
        shortlist(model, batch, hub_pool(registry, base=base), k=args.k, per_forward=args.per_forward)
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        registry.close()
    return {"adapters": args.one, "seconds": seconds, "cpu_seconds": cpu_seconds, "push_seconds": push_seconds, "rss_before_kib": before,
            "rss_peak_extra_kib": peak - before if reset else None, "python_peak_bytes": python_peak,
            "pool_factor_bytes": pool_bytes, "top": [(c.ref, round(loss, 4)) for c, loss in top[:3]],
            "target": target.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=Path.home() / ".cache" / "loramgr-lab")
    parser.add_argument("--size", default="default", help="lab size")
    parser.add_argument("--family", default="t5")
    parser.add_argument("--sizes", default="50,200,500")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--per-forward", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one pool size, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args)))
        return
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        command = [sys.executable, __file__, "--one", str(size), "--lab-dir", str(args.lab_dir), "--size", args.size,
                   "--family", args.family, "--k", str(args.k), "--per-forward", str(args.per_forward),
                   "--threads", str(args.threads)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"lab {args.family} base, {rows[0]['target']} (5 shots); k={args.k}, {args.per_forward} per forward, "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    header = (f"{'adapters':>9}{'shortlist s':>13}{'ms/adapter':>12}{'CPU ms/adapter':>16}{'peak RSS +MiB':>15}{'py peak MiB':>13}"
              f"{'all factors MiB':>17}{'push s':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        extra = row["rss_peak_extra_kib"]
        print(f"{row['adapters']:>9}{row['seconds']:>13.2f}{1000 * row['seconds'] / row['adapters']:>12.2f}"
              f"{1000 * row['cpu_seconds'] / row['adapters']:>16.2f}"
              f"{'n/a' if extra is None else f'{extra / 1024:.1f}':>15}{row['python_peak_bytes'] / 2**20:>13.2f}"
              f"{row['pool_factor_bytes'] / 2**20:>17.1f}{row['push_seconds']:>9.1f}")
    print("top 3 at the largest size: " + ", ".join(f"{ref} {loss}" for ref, loss in rows[-1]["top"]))


if __name__ == "__main__":
    main()
