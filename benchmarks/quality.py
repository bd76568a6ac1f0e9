"""Quality of composition on the offline lab's held-out tasks.

    python benchmarks/quality.py [--size default] [--seeds 0,1,2] [--shots 5] [--budget 40] [--family t5]

Builds (or reuses) the lab in --lab-dir, then prints exact-match accuracy on each target's test
split for every method (mean ± spread over seeds) and each method's compose time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loramgr.examples.lab.build import build_lab  # noqa: E402
from loramgr.examples.quality import format_table, quality_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab-dir", type=Path, default=Path.home() / ".cache" / "loramgr-lab")
    parser.add_argument("--size", default="default")
    parser.add_argument("--family", default="t5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--targets", help="comma-separated target names (default: all)")
    args = parser.parse_args()
    started = time.perf_counter()
    lab = build_lab(args.lab_dir / f"{args.size}-seed0", size=args.size, seed=0,
                    progress=lambda what, done, total: print(f"  lab [{done}/{total}] {what}", flush=True))
    print(f"lab ready in {time.perf_counter() - started:.0f} s")
    rows = quality_table(lab, args.family, seeds=[int(s) for s in args.seeds.split(",")], shots=args.shots,
                         budget=args.budget, targets=args.targets.split(",") if args.targets else None,
                         say=lambda text: print(f"  measuring {text}", flush=True))
    print(f"\n{args.family} lab, {args.shots} shots, budget {args.budget}, seeds {args.seeds}:\n")
    print(format_table(rows))


if __name__ == "__main__":
    main()
