"""Pull throughput of a 200 MB adapter from a `loramgr serve` over loopback, against `curl`
fetching the same blob URL from the same server, in the same run.

    python benchmarks/remote_pull.py [--size-mb 200] [--repeats 5] [--database-url URL]

The hub and the clients share this machine's cores, so absolute figures depend on it; the
ratio is the point. loramgr's pull also hashes every byte (sha256) while it streams and
renames the file into place; curl only writes it. Medians, with the ranges, side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.remote.helpers

from loramgr.hub.client import RemoteRegistry  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402
from tests.remote.helpers import LiveServer, write_synthetic_adapter  # noqa: E402
from hub_helpers import MB, create_token, timed  # noqa: E402


def summary(label: str, size: int, seconds: list[float]) -> str:
    rates = sorted(size / s / MB for s in seconds)
    return (f"{label:<34} {statistics.median(rates):9.0f} MB/s   (min {rates[0]:.0f}, max {rates[-1]:.0f}; "
            f"median {statistics.median(seconds) * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", help="the hub's metadata store (default: SQLite in a temp home)")
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed for the comparison")

    with tempfile.TemporaryDirectory(prefix="loramgr-bench-") as scratch:
        root = Path(scratch)
        adapter = write_synthetic_adapter(root / "adapter", megabytes=args.size_mb, hidden=4096, rank=16)
        server_home = root / "server"
        database_url = args.database_url or f"sqlite:///{server_home / 'registry.db'}"
        token = create_token(database_url)
        server = LiveServer(server_home, database_url=database_url, args=("--max-upload-mb", "100000")).start()
        try:
            settings = Settings.load(environ={}, home=str(root / "client"), remote=server.url, token=token)
            hub = RemoteRegistry(settings)
            push_seconds = timed(lambda: hub.push(adapter, name="bench/big", task="bench"))
            version = hub.show("bench/big")
            weights = next(f for f in version.files if f.name == "adapter_model.safetensors")
            url = f"{server.url}/api/blobs/{weights.digest}"

            pulls, curls = [], []
            for repeat in range(args.repeats):  # take turns, so a busy moment slows both alike
                out = root / f"pull-{repeat}"
                pulls.append(timed(lambda: hub.pull("bench/big", output=out)))  # noqa: B023 (called now)
                shutil.rmtree(out)
                target = root / f"curl-{repeat}"
                curl = ["curl", "-sSf", "-o", str(target), url]
                curls.append(timed(lambda: subprocess.run(curl, check=True)))  # noqa: B023 (called now)
                target.unlink()
            hub.close()
        finally:
            server.stop()

    print(f"adapter: {version.byte_size / MB:.0f} MB ({weights.size / MB:.0f} MB weights blob), "
          f"{args.repeats} repeats, hub on {server.url} ({'PostgreSQL' if args.database_url else 'SQLite'})")
    print(summary("loramgr pull (whole adapter)", version.byte_size, pulls))
    print(summary("curl -o FILE (weights blob only)", weights.size, curls))
    pull_rate = statistics.median(version.byte_size / s for s in pulls)
    curl_rate = statistics.median(weights.size / s for s in curls)
    print(f"{'ratio (pull / curl)':<34} {pull_rate / curl_rate:9.2f}")
    print(f"{'loramgr push (upload + commit)':<34} {version.byte_size / push_seconds / MB:9.0f} MB/s   (once)")


if __name__ == "__main__":
    main()
