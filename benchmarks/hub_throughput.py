"""Push/pull throughput of a 200 MB adapter against `cp`, and search latency with 10,000 versions.

    python benchmarks/hub_throughput.py [--size-mb 200] [--versions 10000] [--repeats 5] [--dir /dev/shm]

Prints medians side by side with the ratios. Run by hand; these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings


def make_big_adapter(folder: Path, size_mb: int) -> Path:
    """A valid PEFT LoRA folder of about ``size_mb`` MB: 32 layers x q,k,v,o at 4096 wide."""
    hidden, layers, modules = 4096, 32, ("q_proj", "k_proj", "v_proj", "o_proj")
    rank = max(1, round(size_mb * 1e6 / (layers * len(modules) * 2 * hidden * 4)))
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for module in modules:
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator)
            tensors[f"{key}.lora_B.weight"] = torch.randn(hidden, rank, generator=generator)
    folder.mkdir(parents=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "target_modules": list(modules), "base_model_name_or_path": "bench/llama-7b-like"}))
    return folder


def timed(fn) -> float:
    # Flush earlier writes first: otherwise each run pays for the previous one's dirty pages.
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drop(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=True)


def transfer_benchmark(root: Path, size_mb: int, repeats: int) -> None:
    adapter = make_big_adapter(root / "adapter", size_mb)
    size = sum(f.stat().st_size for f in adapter.iterdir())
    cp_times, push_times, pull_times = [], [], []
    for index in range(repeats):
        home = root / f"home{index}"
        registry = Registry(Settings.load(home=str(home)))
        registry.show  # noqa: B018  (opened: schema created outside the timing)
        cp_times.append(timed(lambda: subprocess.run(["cp", "-r", str(adapter), str(root / "copy")], check=True)))
        drop(root / "copy")
        push_times.append(timed(lambda: registry.push(adapter, name="bench/big", task="t")))
        pull_times.append(timed(lambda: registry.pull("bench/big", output=root / "pulled")))
        drop(root / "pulled")
        registry.close()
        drop(home)
    cp, push, pull = (statistics.median(t) for t in (cp_times, push_times, pull_times))
    mb = size / 1e6
    print(f"\nTransfer of a {mb:.0f} MB adapter (median of {repeats}):")
    print(f"  {'':<8}{'seconds':>9}{'MB/s':>9}{'x of cp':>9}")
    for label, seconds in (("cp -r", cp), ("push", push), ("pull", pull)):
        print(f"  {label:<8}{seconds:>9.3f}{mb / seconds:>9.0f}{cp / seconds:>9.2f}")


def search_benchmark(root: Path, count: int, repeats: int) -> None:
    from loramgr.hub.refs import AdapterName

    registry = Registry(Settings.load(home=str(root / "search-home")))
    template = dict(task_type="CAUSAL_LM", alpha=16.0, dtype="float32", param_count=1000, byte_size=4000,
                    digest="0" * 64, source="pushed", description=None, manifest="{}")
    bases = [f"org/base-{i}" for i in range(5)]
    tasks = [f"task-{i}" for i in range(50)]
    ranks = [4, 8, 16, 32, 64]
    # Two small blobs really in the store: a commit checks that its blobs are there.
    stored = {name: registry.blobs.put_chunks([content]) for name, content in
              (("adapter_model.safetensors", b"w" * 4000), ("adapter_config.json", b"{}"))}

    def populate(session):
        # Metadata only, through the registry's own transaction code: 10,000 real pushes of
        # distinct adapters would measure the push, not the search.
        for index in range(count):
            record = dict(template, base_model=bases[index % 5], task=tasks[index % 50], rank=ranks[index % 5],
                          target_modules=",q_proj,v_proj," if index % 2 else ",q_proj,k_proj,v_proj,o_proj,")
            version = registry._register(session, AdapterName(f"ns{index % 20}", f"adapter-{index // 10}"),
                                         record, stored, [], None)
        return version

    started = time.perf_counter()
    registry._write(populate)
    print(f"\nSearch with {count:,} versions in SQLite (populated in {time.perf_counter() - started:.1f} s), "
          f"median of {repeats * 20} calls:")
    queries = {
        "base+task+rank": dict(base="org/base-1", task="task-11", rank=8),
        "task": dict(task="task-7"),
        "max_rank+target": dict(max_rank=16, target="k_proj", limit=50),
        "text query": dict(query="adapter-42"),
        "all versions, task": dict(task="task-3", all_versions=True),
    }
    print(f"  {'query':<22}{'ms':>8}{'hits':>6}")
    for label, filters in queries.items():
        times = []
        for _ in range(repeats * 20):
            start = time.perf_counter()
            hits = registry.search(**filters)
            times.append(time.perf_counter() - start)
        print(f"  {label:<22}{statistics.median(times) * 1000:>8.2f}{len(hits):>6}")
    registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path.home(),
                        help="where to work; /dev/shm takes the disk out and compares software alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loramgr-bench-", dir=args.dir) as scratch:
        print(f"working in {args.dir}")
        transfer_benchmark(Path(scratch), args.size_mb, args.repeats)
        search_benchmark(Path(scratch), args.versions, args.repeats)


if __name__ == "__main__":
    main()
