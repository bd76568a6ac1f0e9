"""Download time of a 200 MB adapter from a `loramgr serve` hub over loopback: huggingface_hub's
`snapshot_download` through the hub's Hugging Face API, against `loramgr pull` of the same
version, in the same run, from the same server.

    python benchmarks/hf_download.py [--size-mb 200] [--repeats 5]

Each repeat downloads into a fresh, empty folder (snapshot_download: a fresh cache_dir, so
nothing is reused), the two taking turns so a busy moment slows both alike. `loramgr pull`
also hashes every byte (sha256) as it streams; snapshot_download checks sizes only, and makes
a HEAD request per file first. Medians, with the ranges, side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

# huggingface_hub reads these when it is imported: set them first. It talks only to the local hub.
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_ENDPOINT", None)
os.environ.pop("HF_TOKEN", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.remote.helpers

from loramgr.hub.client import RemoteRegistry  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402
from tests.remote.helpers import LiveServer, write_synthetic_adapter  # noqa: E402
from hub_helpers import MB, create_token, timed  # noqa: E402


def summary(label: str, size: int, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (f"{label:<42} {statistics.median(ordered) * 1000:7.0f} ms  {size / statistics.median(ordered) / MB:6.0f} MB/s"
            f"   (min {ordered[0] * 1000:.0f}, max {ordered[-1] * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loramgr-bench-") as scratch:
        root = Path(scratch)
        os.environ["HF_HOME"] = str(root / "hf-home")
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        adapter = write_synthetic_adapter(root / "adapter", megabytes=args.size_mb, hidden=4096, rank=16)
        server_home = root / "server"
        token = create_token(f"sqlite:///{server_home / 'registry.db'}")
        server = LiveServer(server_home, args=("--max-upload-mb", "100000")).start()
        try:
            settings = Settings.load(environ={}, home=str(root / "client"), remote=server.url, token=token)
            hub = RemoteRegistry(settings)
            version = hub.push(adapter, name="bench/big", task="bench")

            snapshots, pulls = [], []
            for repeat in range(args.repeats):
                cache = root / f"hf-cache-{repeat}"
                snapshots.append(timed(lambda cache=cache: snapshot_download(
                    "bench/big", revision=str(version.number), endpoint=server.url, cache_dir=cache)))
                shutil.rmtree(cache)
                out = root / f"pull-{repeat}"
                pulls.append(timed(lambda out=out: hub.pull(version.ref, output=out)))
                shutil.rmtree(out)
            hub.close()
        finally:
            server.stop()

    print(f"adapter {version.ref}: {version.byte_size / MB:.0f} MB in {len(version.files)} files, "
          f"{args.repeats} repeats, hub on {server.url} (SQLite)")
    print(summary("huggingface_hub snapshot_download (HF API)", version.byte_size, snapshots))
    print(summary("loramgr pull (RemoteRegistry.pull)", version.byte_size, pulls))
    print(f"{'ratio (snapshot_download / pull, time)':<42} {statistics.median(snapshots) / statistics.median(pulls):7.2f}")


if __name__ == "__main__":
    main()
