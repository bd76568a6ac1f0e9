"""Response time of the web pages with 10,000 versions in the registry.

    python benchmarks/web_pages.py [--versions 10000] [--repeats 50] [--live]

Versions are bulk-inserted through the registry's own transaction code (as hub_throughput.py
does): 1,000 adapters of 10 versions, every 20th version composed from two others with a 40-step search
history, each with a small model card. Each page is fetched ``--repeats`` times in-process
(Starlette's TestClient: routing, registry reads, templates; no sockets); ``--live`` also times
them over loopback against a real uvicorn. Prints the median and 90th percentile per page.
Target: under 100 ms median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.remote.helpers

from loramgr.hub.records import Lineage, SourceWeight
from loramgr.hub.refs import AdapterName
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

CARD = b"# A LoRA adapter\n\nTrained for a task. | split | score |\n|---|---|\n| test | 0.9 |\n" * 20


def populate(registry: Registry, count: int) -> None:
    # Real blobs (tiny ones): the registry checks that a version's blobs are in the store.
    card_digest, card_size = registry.blobs.put_chunks(iter([CARD]))
    weights_digest, weights_size = registry.blobs.put_chunks(iter([b"\0" * 4000]))
    config_digest, config_size = registry.blobs.put_chunks(iter([b"{}" * 150]))
    template = dict(task_type="CAUSAL_LM", alpha=16.0, dtype="float32", param_count=1000, byte_size=4000,
                    digest="0" * 64, description="An adapter for the benchmark", manifest="{}")
    bases = [f"org/base-{i}" for i in range(5)]
    tasks = [f"task-{i}" for i in range(50)]
    ranks = [4, 8, 16, 32, 64]
    stored = {"adapter_model.safetensors": (weights_digest, weights_size),
              "adapter_config.json": (config_digest, config_size), "README.md": (card_digest, card_size)}
    history = [{"loss": 3.0 - i * 0.02, "task_loss": 2.9 - i * 0.02, "best": 3.0 - i * 0.02} for i in range(40)]

    def work(session):
        version = None
        for index in range(count):
            number = index // 10
            adapter = AdapterName(f"ns{number % 20}", f"adapter-{number}")
            composed = index % 20 == 19
            record = dict(template, base_model=bases[index % 5], task=tasks[index % 50], rank=ranks[index % 5],
                          source="composed" if composed else "pushed",
                          target_modules=",q_proj,v_proj," if index % 2 else ",q_proj,k_proj,v_proj,o_proj,")
            lineage = None
            if composed:
                lineage = Lineage(sources=[SourceWeight(f"ns{(number - 1) % 20}/adapter-{number - 1}@1", 0.6),
                                           SourceWeight(f"ns{(number - 2) % 20}/adapter-{number - 2}@1", -0.2)],
                                  mode="delta", score=1.0, seed=0, examples_digest="e" * 64,
                                  details={"history": history, "budget": 40})
            version = registry._register(session, adapter, record, stored, [], lineage)
        return version

    registry._write(work)


def timings(get, urls: dict[str, str], repeats: int) -> None:
    print(f"  {'page':<34}{'median ms':>11}{'p90 ms':>9}{'bytes':>9}")
    for label, url in urls.items():
        times, size = [], 0
        get(url)  # warm: templates compiled, connections open
        for _ in range(repeats):
            start = time.perf_counter()
            response = get(url)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200, (url, response.status_code)
            size = len(response.content)
        times.sort()
        print(f"  {label:<34}{statistics.median(times) * 1000:>11.1f}{times[int(len(times) * 0.9)] * 1000:>9.1f}"
              f"{size:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--live", action="store_true", help="also time over loopback against a real uvicorn")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loramgr-web-bench-") as scratch:
        home = Path(scratch) / "home"
        registry = Registry(Settings.load(environ={}, home=str(home)))
        started = time.perf_counter()
        populate(registry, args.versions)
        registry.close()
        print(f"{args.versions:,} versions in SQLite (populated in {time.perf_counter() - started:.1f} s)")
        urls = {
            "home": "/",
            "home, page 5": "/?page=5",
            "home, page 40 (the last)": "/?page=40",
            "home, text search": "/?q=adapter-42",
            "home, base+task+rank range": "/?base=org/base-1&task=task-11&min_rank=4&max_rank=16",
            "home, composed only": "/?source=composed",
            "adapter (10 versions, card)": "/adapters/ns2/adapter-42",
            "adapter, older version": "/adapters/ns2/adapter-42?version=3",
            "adapter used in 2 compositions": "/adapters/ns18/adapter-98",
            "composed adapter (lineage, curve)": "/adapters/ns19/adapter-99",
            "login form": "/login",
        }
        from starlette.testclient import TestClient

        from loramgr.hub.server import ServerConfig, create_app

        app = create_app(Settings.load(environ={}, home=str(home)), ServerConfig())
        print(f"\nIn-process (TestClient), {args.repeats} requests each:")
        with TestClient(app) as client:
            timings(client.get, urls, args.repeats)
        if args.live:
            import httpx

            from tests.remote.helpers import LiveServer

            server = LiveServer(home).start()
            try:
                print(f"\nOver loopback (uvicorn, one keep-alive connection), {args.repeats} requests each:")
                with httpx.Client(base_url=server.url) as client:
                    timings(client.get, urls, args.repeats)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
