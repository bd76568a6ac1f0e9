"""LoraHub's table on a real LLM: SmolLM2-135M-Instruct, 22 BIG-bench modules, 8 held-out BBH targets.

Builds the real-model lab once (cached; about 40 minutes on 2 CPU cores, resumable), then runs
every method on every target for 3 seeds of shot choice and prints exact match (option accuracy
in brackets) per target and as the mean over targets, with the median search time per method.

Run from the repository root:
    python benchmarks/real_lab.py [--seeds 0,1,2] [--targets a,b] [--json FILE] [--device cuda]
    python benchmarks/real_lab.py --configs default,ngopt,gradient   # loramgr variants
    python benchmarks/real_lab.py --json F --resume   # skip the targets F already holds, add the rest
    python benchmarks/real_lab.py --json F --add-configs no-screen   # new loramgr rows beside F's
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loramgr.composer.options import ComposeOptions  # noqa: E402

from loramgr.examples.reallab.build import LabConfig, build_reallab  # noqa: E402
from loramgr.examples.reallab.table import Table, format_table, run_table  # noqa: E402

CONFIGS = {
    "default": ComposeOptions(),  # the per-block gradient search, screened, 20 steps
    "slope-screen": ComposeOptions(screen_top=1),  # the screen: the plain sum and the steepest module alone
    "ngopt": ComposeOptions(search="nevergrad"),  # the default before: NGOpt, screened, 40 evaluations
    "gradient": ComposeOptions(search="gradient", granularity="module"),  # one weight per module
    "no-screen": ComposeOptions(screen=False),  # the default search from w = 0
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default=None, help="comma-separated target tasks (default: all 8)")
    parser.add_argument("--configs", default="default", help=f"loramgr rows: {', '.join(CONFIGS)}")
    parser.add_argument("--json", default=None, help="also write every row to this file")
    parser.add_argument("--resume", action="store_true",
                        help="keep the targets already in --json (same lab, seeds and rows) and run only the others")
    parser.add_argument("--add-configs", default=None, metavar="NAMES",
                        help="run only these loramgr rows, on the targets and seeds --json holds, and add them "
                             "to it (no baseline is run again)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if (args.resume or args.add_configs) and not args.json:
        parser.error("--resume and --add-configs need --json FILE")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    lab = build_reallab(LabConfig(), device=args.device, say=say)
    if args.add_configs:
        return _add_configs(lab, args, say)
    configs = _configurations(args.configs, lab)
    seeds = [int(s) for s in args.seeds.split(",")]
    run = {"lab": lab.config.digest(), "seeds": seeds, "configs": sorted(configs)}
    kept = _resumed(args.json, run) if args.resume else Table()
    targets = [t for t in (args.targets.split(",") if args.targets else lab.config.targets)
               if t not in kept.targets()]
    if kept.rows:
        say(f"resuming: {len(kept.targets())} targets kept from {args.json}, {len(targets)} to run")
    started = time.perf_counter()
    table = run_table(lab, seeds=seeds, targets=targets, configurations=configs, device=args.device, say=say,
                      after_target=lambda t: _save(Table(kept.rows + t.rows), args.json, run))
    table = Table(kept.rows + table.rows)
    print(format_table(table))
    print(f"\n{len(lab.config.upstream)} modules, shots 5, prompt format {lab.config.prompt_format}, "
          f"{time.perf_counter() - started:.0f} s")
    _save(table, args.json, run)
    return 0


def _configurations(names: str, lab) -> dict[str, ComposeOptions]:
    unknown = [n for n in names.split(",") if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    return {"loramgr " + n: replace(CONFIGS[n], prompt_format=lab.config.prompt_format) for n in names.split(",")}


def _add_configs(lab, args, say) -> int:
    """New loramgr rows beside an earlier run's, on its lab, seeds and targets."""
    if not Path(args.json).exists():
        raise SystemExit(f"{args.json} does not exist: --add-configs adds rows to an earlier run")
    data = json.loads(Path(args.json).read_text())
    if data.get("lab") != lab.config.digest():
        raise SystemExit(f"{args.json} was measured on another lab ({data.get('lab')}): its rows are not comparable")
    configs = _configurations(args.add_configs, lab)
    kept = Table.from_dict(data)
    already = [name for name in configs if name in kept.methods()]
    if already:
        raise SystemExit(f"{args.json} already has rows for {already[0]!r}")
    run = {"lab": data["lab"], "seeds": data["seeds"], "configs": sorted(set(data["configs"]) | set(configs))}
    targets = args.targets.split(",") if args.targets else kept.targets()
    table = run_table(lab, seeds=data["seeds"], targets=targets, configurations=configs, device=args.device, say=say,
                      baselines=False, after_target=lambda t: _save(Table(kept.rows + t.rows), args.json, run))
    table = Table(kept.rows + table.rows)
    print(format_table(table))
    _save(table, args.json, run)
    return 0


def _save(table: Table, path, run: dict) -> None:
    # Written after every target, so a long run interrupted still leaves what it measured.
    if path:
        Path(path).write_text(json.dumps({**run, **table.to_dict()}, indent=1) + "\n")


def _resumed(path, run: dict) -> Table:
    """The rows of an earlier run in ``path`` (none if there is no file); refuses a file from
    another lab, other seeds or other rows, whose figures would not be comparable."""
    if not Path(path).exists():
        return Table()
    data = json.loads(Path(path).read_text())
    differing = [key for key in run if data.get(key) != run[key]]
    if differing:
        raise SystemExit(f"{path} holds a run with other {', '.join(differing)}: "
                         "it cannot be resumed with these settings")
    return Table.from_dict(data)


if __name__ == "__main__":
    raise SystemExit(main())
