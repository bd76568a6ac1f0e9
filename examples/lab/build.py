"""Build the offline lab: tokenizer, two pre-trained tiny base models, LoRA modules, targets, oracles.

``build_lab(root)`` is deterministic for a seed (bit-for-bit on one machine: every job runs on one
thread, with its own seeds) and cached: a complete build (``lab.json`` present, same seed, size and
`LAB_VERSION`) is reused as it is. Jobs (pre-training, modules, oracles) run in a small process
pool when the size asks for workers; each job depends only on its own inputs, so the result is the
same bytes whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from loramgr.hub.errors import InvalidArgument

from .manifest import MANIFEST, Family, Lab, LabBuildFailed, LabModule, Target
from .models import BASE_IDS, FAMILIES, TARGETS
from .targets import TARGETS as TARGET_SPECS
from .tasks import TASKS, stream_rng

# Bump when anything that changes the built bytes changes (tasks, sizes, training), so cached
# labs are rebuilt instead of reused.
LAB_VERSION = 2

Progress = Callable[[str, int, int], None]  # (what just finished, done, total)


@dataclass(frozen=True)
class ModuleConfig:
    """How one task's module is trained: LoRA rank, target-module set, Adam steps (default size)."""

    rank: int
    targets: str
    steps: int


# A mix of ranks and target sets, and more steps where a task needs them (sort, pairs, dup move
# characters around the most). Same-shaped pairs (l2d/low: r8 + FFN) keep LoraHub's factor-wise
# mode applicable to some targets; the others need the exact delta mode.
MODULES: dict[str, ModuleConfig] = {
    **{t: ModuleConfig(4, "qv", 200) for t in ("head", "tail", "first", "drop")},
    **{t: ModuleConfig(8, "qkvo", 300) for t in ("last", "ends", "rotl", "rotr", "evens", "odds", "nodig", "digs")},
    "rev": ModuleConfig(8, "qkvo", 400),
    **{t: ModuleConfig(8, "all", 300) for t in ("l2d", "low", "swap", "unshift")},
    "up": ModuleConfig(8, "all", 400),
    **{t: ModuleConfig(16, "all", 300) for t in ("shift", "d2l")},
    **{t: ModuleConfig(16, "all", 400) for t in ("sort", "pairs", "dup")},
}
ORACLE = ModuleConfig(16, "all", 250)


@dataclass(frozen=True)
class LabSize:
    """What a lab size builds, and how long it trains (``steps_scale`` multiplies every step count)."""

    modules: dict[str, tuple[str, ...]]
    targets: dict[str, tuple[str, ...]]
    pretrain_steps: int
    steps_scale: float
    train_examples: int
    oracles: bool  # train oracles in the build (else on first use)
    workers: int
    example_set: int = 20
    few_shot: int = 20
    test: int = 100
    replay_share: float = 1 / 3
    locality: float = 5.0
    lora_lr: float = 3e-3


# The causal family's modules: character maps and sort, which a 2-layer Llama's LoRA learns in a
# few hundred steps (its positional tasks, rev and rotations, do not at this budget).
LLAMA_TASKS = ("l2d", "low", "shift", "d2l", "up", "unshift", "swap", "sort")
SIZES: dict[str, LabSize] = {
    "default": LabSize(
        modules={"t5": tuple(MODULES), "llama": LLAMA_TASKS},
        targets={"t5": tuple(TARGET_SPECS),
                 "llama": ("k1-shift", "k2-l2d+low", "k3-shift:low")},
        pretrain_steps=500, steps_scale=1.0, train_examples=2000, oracles=True, workers=2),
    "small": LabSize(
        modules={"t5": ("l2d", "low", "shift"), "llama": ("l2d", "low")},
        targets={"t5": ("k1-shift", "k2-l2d+low", "k3-l2d:low"), "llama": ("k2-l2d+low",)},
        # Short runs learn more with a larger step size.
        pretrain_steps=250, steps_scale=0.3, train_examples=500, oracles=False, workers=1, lora_lr=1e-2,
        few_shot=10, test=40),
}


def _target_spec(name: str):
    if name in TARGET_SPECS:
        return TARGET_SPECS[name]
    from .targets import same_task

    if name.startswith("k1-") and name[3:] in TASKS:
        return same_task(name[3:])
    raise InvalidArgument(f"unknown lab target {name!r}", target=name)


@dataclass(frozen=True)
class Job:
    """One unit of training, run in-process or in a worker: everything it needs is in here."""

    kind: str  # "pretrain" | "module" | "oracle"
    family: str
    name: str  # task or target name ("" for pretrain)
    root: str
    seed: int
    size: str
    out: str  # folder the job writes
    steps: int  # Adam steps; also the job's cost, to schedule the longest first


def build_lab(root: Path, *, size: str = "default", seed: int = 0, progress: Optional[Progress] = None,
              workers: Optional[int] = None) -> Lab:
    """Build the lab into ``root`` (or reuse a complete build of the same seed, size and version).

    ``workers`` overrides the size's process count (the bytes built do not depend on it).
    Raises `InvalidArgument` for an unknown size.
    """
    if size not in SIZES:
        raise InvalidArgument(f"unknown lab size {size!r}; expected one of {', '.join(SIZES)}", size=size)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        cached = _cached(root, size, seed)
        if cached is not None:
            return cached
        return _build(root, SIZES[size], size, seed, progress, workers or SIZES[size].workers)


def _cached(root: Path, size: str, seed: int) -> Optional[Lab]:
    if not (root / MANIFEST).is_file():
        return None
    lab = Lab.load(root)
    if (lab.lab_version, lab.size, lab.seed) == (LAB_VERSION, size, seed):
        return lab
    return None


@contextmanager
def _locked(root: Path):
    """Serialise builders of one root across processes (a second one then finds the cache)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent builds of one root are unsupported
        yield
        return
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(root: Path, spec: LabSize, size: str, seed: int, progress, workers: int) -> Lab:
    from .jobs import write_lab_tokenizer

    (root / MANIFEST).unlink(missing_ok=True)
    for family in FAMILIES:  # leftovers of an interrupted or different build
        shutil.rmtree(root / family, ignore_errors=True)
    tokenizer_dir = root / "tokenizer"
    write_lab_tokenizer(tokenizer_dir)

    def job(kind, family, name, out, steps):
        return Job(kind, family, name, str(root), seed, size, str(out), steps)

    pretrain = [job("pretrain", f, "", root / f / "base", spec.pretrain_steps) for f in FAMILIES]
    later = []
    families = {}
    for family in FAMILIES:
        modules = []
        for task in spec.modules[family]:
            config = MODULES[task]
            out = root / family / "modules" / task
            later.append(job("module", family, task, out, _steps(config.steps, spec)))
            modules.append(LabModule(task, task, family, out, config.rank, TARGETS[family][config.targets],
                                     root / family / "examples" / f"{task}.jsonl"))
        targets, oracles = [], {}
        for name in spec.targets[family]:
            targets.append(_write_target(root, family, name, spec, seed))
            if spec.oracles:
                out = root / family / "oracles" / name
                later.append(job("oracle", family, name, out, _steps(ORACLE.steps, spec)))
                oracles[name] = out
        families[family] = Family(BASE_IDS[family], root / family / "base", tuple(modules), tuple(targets), oracles)

    total = len(pretrain) + len(later)
    done = 0
    for batch in (pretrain, sorted(later, key=lambda j: -j.steps)):
        for finished in _run_all(batch, workers):
            done += 1
            if progress is not None:
                progress(f"{finished.kind} {finished.family} {finished.name}".strip(), done, total)
    lab = Lab(root, seed, size, LAB_VERSION, families)
    lab.save()  # last: marks the build complete
    return lab


def _steps(steps: int, spec: LabSize) -> int:
    return max(10, round(steps * spec.steps_scale))


def _write_target(root: Path, family: str, name: str, spec: LabSize, seed: int) -> Target:
    from .evaluate import write_examples

    target = _target_spec(name)
    folder = root / family / "targets" / name
    folder.mkdir(parents=True, exist_ok=True)
    few_shot = write_examples(folder / "few_shot.jsonl",
                              target.examples(stream_rng(seed, "few-shot", name), spec.few_shot, "train"))
    test = write_examples(folder / "test.jsonl", target.examples(stream_rng(seed, "test", name), spec.test, "test"))
    return Target(name, target.kind, target.description, target.module_tasks, family, few_shot, test)


def _run_all(jobs: list[Job], workers: int):
    """Run ``jobs``, yielding each as it finishes: here when ``workers`` <= 1, else spread over
    ``workers`` worker processes (`worker.py`), longest jobs first. Raises `LabBuildFailed`."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run_job(job)
            yield job
        return
    shares: list[list[Job]] = [[] for _ in range(min(workers, len(jobs)))]
    loads = [0] * len(shares)
    for job in sorted(jobs, key=lambda j: -j.steps):  # greedy: next-longest job to the least loaded
        least = loads.index(min(loads))
        shares[least].append(job)
        loads[least] += job.steps
    # The child finds this package the way this process did, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    events: queue.Queue = queue.Queue()
    procs = []
    try:
        for share in shares:
            proc = subprocess.Popen([sys.executable, "-m", f"{__package__}.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            proc.stdin.write("".join(json.dumps(asdict(job)) + "\n" for job in share))
            proc.stdin.close()
            errors: list[str] = []
            threading.Thread(target=_read_lines, args=(proc.stdout, share, events, proc, errors), daemon=True).start()
            threading.Thread(target=lambda stream=proc.stderr, into=errors: into.extend(stream), daemon=True).start()
            procs.append(proc)
        running = len(procs)
        while running:
            job, proc, errors = events.get()
            if job is not None:
                yield job
                continue
            running -= 1
            if proc.wait() != 0:
                tail = "".join(errors[-15:]).strip()
                raise LabBuildFailed(f"a lab build worker failed (exit {proc.returncode}): {tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _read_lines(stream, share: list[Job], events: queue.Queue, proc, errors: list[str]) -> None:
    for line in stream:
        if line.startswith("done "):
            events.put((share[int(line.split()[1])], proc, errors))
    events.put((None, proc, errors))


def run_job(job: Job) -> float:
    """Run one job (in any process); returns its seconds of CPU time."""
    import torch
    from transformers.utils import logging as hf_logging

    started = time.process_time()
    threads = torch.get_num_threads()
    bars = hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fixes the reduction order
    hf_logging.disable_progress_bar()  # per-file bars would drown the build's own progress
    try:
        with warnings.catch_warnings():
            # transformers' deprecation notices about its own internals, raised through PEFT
            warnings.simplefilter("ignore", FutureWarning)
            _dispatch(job)
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
    return time.process_time() - started


def _dispatch(job: Job) -> None:
    from . import jobs

    spec = SIZES[job.size]
    if job.kind == "pretrain":
        jobs.pretrain_job(job, spec)
    elif job.kind == "module":
        jobs.module_job(job, spec, replace(MODULES[job.name], steps=job.steps))
    else:
        jobs.oracle_job(job, spec, _target_spec(job.name), replace(ORACLE, steps=job.steps))


def ensure_oracle(lab: Lab, family: str, name: str) -> Path:
    """Train (once) and return the oracle of target ``name``; safe against concurrent callers."""
    out = lab.root / family / "oracles" / name
    with _locked(lab.root):
        if not out.is_dir():
            spec = SIZES[lab.size]
            staging = Path(tempfile.mkdtemp(dir=lab.root, prefix=".oracle-"))
            try:
                run_job(Job("oracle", family, name, str(lab.root), lab.seed, lab.size, str(staging),
                            _steps(ORACLE.steps, spec)))
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return out
