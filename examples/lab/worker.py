"""A build worker: ``python -m loramgr.examples.lab.worker`` runs the jobs given on stdin.

Each stdin line is one job (JSON of `build.Job`); after each, the worker prints ``done <index>``.
A plain subprocess rather than multiprocessing's spawn: spawn re-imports the caller's main
module, which deadlocks a script that calls ``build_lab`` without an ``if __name__`` guard.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from .build import Job, run_job

    for index, line in enumerate(sys.stdin):
        if line.strip():
            run_job(Job(**json.loads(line)))
            print(f"done {index}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
