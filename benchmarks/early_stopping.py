"""Early stopping, studied offline: where would ``--patience P --tol T`` have stopped each search
of a ``real_time_to_quality.py --histories FILE`` run, at what loss, and how long after its start?

    python benchmarks/real_time_to_quality.py --seeds 0 --no-held-out --steps 20 \\
        --only "=gradient block" --histories runs.json
    python benchmarks/early_stopping.py runs.json [--patience 2,3,4,5,6,8] [--tol 1e-4,1e-3,1e-2]

A search without patience is deterministic, so its trace (the best loss after each forward, with
the time it came) holds every shorter search as a prefix: stopping is replayed with the rule of
``search_weights_gradient`` (a step counts as stalled unless it beats the best loss of the last
gain by more than ``tol``; the screen's forwards never count). For each configuration and rule it
prints, as medians over runs: the stop's time against the reference's (LoraHub's procedure) search
time, the steps taken, the final loss minus the reference's, and in how many runs that loss is
above the reference's (``worse``), next to the whole trace (no stopping).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Stop:
    steps: int
    seconds: float
    loss: float


def replay(trace: list[list[float]], patience: int | None, tol: float) -> Stop:
    """Where the rule stops on ``trace`` (``[evaluations, seconds, best loss]`` after each
    callback). A first entry past one evaluation is the screen, done in one batched call."""
    screened = trace[0][0] > 1
    steps = trace[1:] if screened else trace
    reference = trace[0][2] if screened else float("inf")
    stalled, taken = 0, 0
    for taken, (_evaluations, _seconds, best) in enumerate(steps, start=1):
        stalled, reference = (0, best) if best < reference - tol else (stalled + 1, reference)
        if patience is not None and stalled >= patience:
            break
    last = steps[taken - 1] if taken else trace[0]
    return Stop(taken, last[1], last[2])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("histories", help="the JSON file of real_time_to_quality.py --histories")
    parser.add_argument("--patience", default="3,4,5,6,8", help="comma-separated patiences to replay")
    parser.add_argument("--tol", default="1e-3,1e-2", help="comma-separated tolerances to replay")
    args = parser.parse_args(argv)
    runs = json.load(open(args.histories))
    if not runs:
        print(f"{args.histories} holds no runs", file=sys.stderr)
        return 1
    rules = [(None, 0.0)] + [(int(p), float(t)) for t in args.tol.split(",") for p in args.patience.split(",")]
    by_config: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_config[run["config"]].append(run)
    median = statistics.median
    header = f"{'configuration':<30}{'rule':<18}{'x ref':>8}{'steps':>7}{'d final':>10}{'worse':>7}"
    print(header)
    print("-" * len(header))
    for name, group in by_config.items():
        for patience, tol in rules:
            stops = [(run, replay(run["trace"], patience, tol)) for run in group]
            rule = "no stopping" if patience is None else f"P{patience} tol {tol:g}"
            print(f"{name:<30}{rule:<18}"
                  f"{median(s.seconds / r['reference_seconds'] for r, s in stops):>8.3f}"
                  f"{median(s.steps for _, s in stops):>7.0f}"
                  f"{median(s.loss - r['reference_loss'] for r, s in stops):>+10.4f}"
                  f"{sum(s.loss > r['reference_loss'] + 1e-4 for r, s in stops):>4}/{len(stops):<2}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
