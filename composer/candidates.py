"""Choosing the candidate LoRA modules and the few-shot examples from the hub.

The hub is used through its public registry API only (``search``, ``pull``, ``read_file``):
local and remote registries work the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from loramgr.hub.examples_file import EXAMPLES_FILE

from .errors import CompositionError, ExamplesError, IncompatibleAdapters
from .examples import Example, sample_examples


@dataclass(frozen=True)
class Candidate:
    """One LoRA module to compose: a pulled hub version or a local folder."""

    label: str
    path: Path
    task: str | None = None
    ref: str | None = None  # NS/NAME@N when it came from the hub
    digest: str | None = None
    base_model: str | None = None


def candidates_for_tasks(registry, tasks: Sequence[str], *, base: str | None = None,
                         progress=None) -> list[Candidate]:
    """The latest version of every adapter registered for ``tasks`` (on ``base``), pulled.

    Composed versions are left out: they are mixes of the modules themselves.
    Raises ``CompositionError`` for a task with no adapters, ``IncompatibleAdapters`` when the
    adapters are for several base models and ``base`` does not pick one.
    """
    tasks = list(dict.fromkeys(t.strip() for t in tasks if t.strip()))
    if not tasks:
        raise CompositionError("no tasks given: pass --tasks a,b")
    found = [v for v in registry.search(task=tasks, base=base, limit=None) if v.source != "composed"]
    missing = [t for t in tasks if not any(v.task == t for v in found)]
    if missing:
        where = f" on base model {base}" if base else ""
        raise CompositionError(f"no adapters registered for task {', '.join(missing)}{where}: "
                               f"see `loramgr search --task {missing[0]}`")
    bases = sorted({v.base_model for v in found})
    if len(bases) > 1:
        raise IncompatibleAdapters(f"the adapters for {', '.join(tasks)} are for different base models "
                                   f"({', '.join(bases)}): pick one with --base")
    found.sort(key=lambda v: (tasks.index(v.task), v.ref))
    return [Candidate(label=v.ref, path=Path(registry.pull(v.ref)), task=v.task, ref=v.ref, digest=v.digest,
                      base_model=v.base_model) for v in found]


def candidates_from_refs(registry, refs: Sequence[str]) -> list[Candidate]:
    """Candidates named one by one: local adapter folders, or hub references."""
    chosen = []
    for ref in refs:
        if Path(ref).is_dir():
            config = json.loads((Path(ref) / "adapter_config.json").read_text()) \
                if (Path(ref) / "adapter_config.json").is_file() else {}
            chosen.append(Candidate(label=str(ref), path=Path(ref), base_model=config.get("base_model_name_or_path")))
            continue
        version = registry.show(ref)
        chosen.append(Candidate(label=version.ref, path=Path(registry.pull(version.ref)), task=version.task,
                                ref=version.ref, digest=version.digest, base_model=version.base_model))
    return chosen


def registered_examples(registry, candidates: Sequence[Candidate], *, shots: int, seed: int) -> list[Example]:
    """``shots`` examples per task, from the example sets registered with the candidates.

    Raises ``ExamplesError`` for a task without registered examples or with fewer than ``shots``.
    """
    by_task: dict[str, list[Example]] = {}
    for candidate in candidates:
        if candidate.ref is None or candidate.task is None:
            continue
        data = registry.read_file(candidate.ref, EXAMPLES_FILE) or b""
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        by_task.setdefault(candidate.task, []).extend(Example(r["input"], r["output"]) for r in rows)
    chosen = []
    for task in dict.fromkeys(c.task for c in candidates if c.task):
        examples = list(dict.fromkeys(by_task.get(task, [])))
        if not examples:
            raise ExamplesError(f"no examples are registered for task {task!r}: pass --examples FILE.jsonl")
        try:
            chosen += sample_examples(examples, shots, seed)
        except ExamplesError as exc:
            raise ExamplesError(f"task {task!r}: {exc}") from None
    return chosen
