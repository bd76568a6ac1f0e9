"""A `loramgr serve` under load: 16 client processes, each repeating search + pull of a random
adapter for 30 s. Prints operations and HTTP requests per second, median and p99 latency per
operation, and errors (which must be 0).

    python benchmarks/remote_load.py [--clients 16] [--seconds 30] [--adapters 24] [--size-mb 2]
                                     [--database-url URL]

The clients run on the same machine as the hub and compete with it for the cores, so these
figures are a floor for what the hub alone can do. Each pull writes a fresh folder (no cache).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.remote.helpers

from loramgr.hub.client import RemoteRegistry  # noqa: E402
from loramgr.hub.db.engine import Database  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402
from loramgr.hub.tokens import TokenStore  # noqa: E402
from tests.remote.helpers import LiveServer, write_synthetic_adapter  # noqa: E402

TASKS = ["sql", "summarise", "translate", "sentiment"]


def populate(url: str, token: str, root: Path, count: int, size_mb: float) -> list[str]:
    hub = RemoteRegistry(Settings.load(environ={}, home=str(root / "populate"), remote=url, token=token))
    names = []
    for index in range(count):
        folder = write_synthetic_adapter(root / f"adapter-{index}", megabytes=size_mb, seed=index, hidden=1024,
                                         rank=8 * (1 + index % 3))
        names.append(hub.push(folder, name=f"bench/a{index}", task=TASKS[index % len(TASKS)]).ref)
    hub.close()
    return names


def client(url: str, refs: list[str], seconds: float, seed: int, scratch: str, barrier, results) -> None:
    """One client: wait for all, then search + pull for ``seconds``; puts its latencies (s)
    per operation, its request count and its failures on ``results``."""
    rng = random.Random(seed)
    hub = RemoteRegistry(Settings.load(environ={}, home=scratch, remote=url), retries=0)
    latencies = {"search": [], "pull": []}
    errors, requests = [], 0
    barrier.wait()  # every client is started and imported: the clock starts for all at once
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for operation in ("search", "pull"):
            start = time.perf_counter()
            try:
                if operation == "search":
                    hub.search(task=rng.choice(TASKS), max_rank=rng.choice([8, 16, 24]))
                    requests += 1
                else:
                    version = hub.pull(rng.choice(refs), output=Path(scratch) / "out", force=True)
                    requests += 1 + len(list(version.iterdir()))  # show + one GET per file
            except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                errors.append(traceback.format_exc(limit=1))
                continue
            latencies[operation].append(time.perf_counter() - start)
    hub.close()
    results.put({"latencies": latencies, "errors": errors, "requests": requests})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--adapters", type=int, default=24)
    parser.add_argument("--size-mb", type=float, default=2)
    parser.add_argument("--database-url", help="the hub's metadata store (default: SQLite in a temp home)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loramgr-load-") as scratch:
        root = Path(scratch)
        server_home = root / "server"
        database_url = args.database_url or f"sqlite:///{server_home / 'registry.db'}"
        database = Database(database_url)
        database.ensure_current()
        token = TokenStore(database).create("bench", write=True).secret
        database.dispose()
        server = LiveServer(server_home, database_url=database_url).start()
        try:
            refs = populate(server.url, token, root, args.adapters, args.size_mb)
            context = multiprocessing.get_context("spawn")
            barrier, queue = context.Barrier(args.clients + 1), context.Queue()
            clients = [context.Process(target=client, args=(server.url, refs, args.seconds, seed,
                                                            str(root / f"client-{seed}"), barrier, queue))
                       for seed in range(args.clients)]
            for process in clients:
                process.start()
            barrier.wait()
            cpu_before, started = cpu_seconds(server.process.pid), time.perf_counter()
            results = [queue.get(timeout=args.seconds + 120) for _ in clients]
            elapsed = time.perf_counter() - started
            server_cpu = (cpu_seconds(server.process.pid) - cpu_before) / elapsed
            for process in clients:
                process.join()
        finally:
            server.stop()

    errors = [e for r in results for e in r["errors"]]
    requests = sum(r["requests"] for r in results)
    print(f"{args.clients} clients x {args.seconds:g} s, {args.adapters} adapters of ~{args.size_mb:g} MB, "
          f"hub metadata on {'PostgreSQL' if args.database_url else 'SQLite'}, {os.cpu_count()} cores shared")
    print(f"{'operation':<10} {'count':>7} {'per s':>8} {'median ms':>10} {'p99 ms':>8}")
    for operation in ("search", "pull"):
        values = [v for r in results for v in r["latencies"][operation]]
        if values:
            print(f"{operation:<10} {len(values):>7} {len(values) / elapsed:>8.1f} "
                  f"{statistics.median(values) * 1000:>10.1f} {percentile(values, 0.99) * 1000:>8.1f}")
    print(f"HTTP requests: {requests} ({requests / elapsed:.0f}/s)   errors: {len(errors)}   "
          f"hub process CPU: {server_cpu:.0%} of one core")
    for error in errors[:5]:
        print("  " + error.strip().splitlines()[-1])
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
