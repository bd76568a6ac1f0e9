"""A pull of a 200 MB adapter into the snapshot cache: hard links (now) against copies (before).

    python benchmarks/snapshot_pull.py [--size-mb 200] [--repeats 5] [--dir /tmp]

For each way, pushes the adapter into a fresh home, pulls it into the cache ``--repeats`` times
(the snapshot removed between pulls), and reports the median seconds of a pull and the bytes the
home holds on disk after it (blocks of distinct inodes: a hard link is counted once). "copy" is
the old behaviour, forced by making ``link_to`` decline as it does across devices. Run by hand.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_helpers import MB  # noqa: E402
from hub_throughput import make_big_adapter  # noqa: E402

from loramgr.hub.registry import Registry  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402
from loramgr.hub.snapshots import remove_snapshot  # noqa: E402


def bytes_on_disk(root: Path) -> int:
    """Allocated bytes under ``root``, each inode once."""
    seen, total = set(), 0
    for folder, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def measure(root: Path, adapter: Path, *, link: bool, repeats: int) -> dict:
    home = root / ("home-link" if link else "home-copy")
    registry = Registry(Settings.load(environ={}, home=str(home)))
    try:
        if not link:
            registry.blobs.link_to = lambda digest, destination: False  # as across devices: copies
        version = registry.push(adapter, name="bench/big", task="bench")
        stored = bytes_on_disk(home)
        seconds = []
        for _ in range(repeats):
            remove_snapshot(registry.snapshot_dir(version))
            os.sync()  # each pull pays for its own writes, not the last one's dirty pages
            start = time.perf_counter()
            registry.pull(version.ref)
            os.sync()
            seconds.append(time.perf_counter() - start)
        return {"seconds": statistics.median(seconds), "stored": stored, "after": bytes_on_disk(home)}
    finally:
        registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the homes go (default: the temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="loramgr-snapshot-bench-") as scratch:
        root = Path(scratch)
        adapter = make_big_adapter(root / "adapter", args.size_mb)
        size = sum(f.stat().st_size for f in adapter.iterdir())
        rows = {way: measure(root, adapter, link=way == "link", repeats=args.repeats) for way in ("copy", "link")}
    print(f"pull of a {size / MB:.0f} MB adapter into the snapshot cache, median of {args.repeats}")
    print(f"{'':6} {'seconds':>9} {'home after push':>16} {'home after pull':>16} {'pull added':>11}")
    for way, row in rows.items():
        print(f"{way:6} {row['seconds']:9.3f} {row['stored'] / MB:13.1f} MB {row['after'] / MB:13.1f} MB "
              f"{(row['after'] - row['stored']) / MB:8.1f} MB")
    copy, link = rows["copy"], rows["link"]
    print(f"link / copy: {link['seconds'] / copy['seconds']:.3f}x the time, "
          f"{(link['after'] - link['stored']) / max(1, copy['after'] - copy['stored']):.4f}x the added bytes")


if __name__ == "__main__":
    main()
