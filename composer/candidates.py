"""Choosing the candidate LoRA modules and the few-shot examples from the hub.

The hub is used through its public registry API only (``search``, ``pull``, ``read_file``):
local and remote registries work the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from loramgr.hub.adapter import read_adapter
from loramgr.hub.errors import InvalidArgument
from loramgr.hub.examples_file import EXAMPLES_FILE, parse_examples

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
    """Candidates named one by one: local adapter folders (validated with the hub's reader), or
    hub references.

    Raises the hub's ``InvalidAdapter`` for a folder that is not a valid LoRA adapter and
    ``AdapterNotFound`` for an unknown ref.
    """
    chosen = []
    for ref in refs:
        if Path(ref).is_dir():
            manifest = read_adapter(ref, digests=False, label=str(ref))
            chosen.append(Candidate(label=str(ref), path=Path(ref), base_model=manifest.base_model))
            continue
        if registry is None:
            raise CompositionError(f"{ref} is not a folder; a hub is needed to pull it")
        version = registry.show(ref)
        chosen.append(Candidate(label=version.ref, path=Path(registry.pull(version.ref)), task=version.task,
                                ref=version.ref, digest=version.digest, base_model=version.base_model))
    return chosen


def registered_examples(registry, candidates: Sequence[Candidate], *, shots: int, seed: int
                        ) -> tuple[list[Example], set[str]]:
    """``shots`` examples per task, from the example sets registered with the candidates, and
    the prompt formats those sets declare (a ``"prompt_format"`` key on their lines).

    Raises ``ExamplesError`` for a task without registered examples or with fewer than ``shots``,
    and for a registered set that is not a valid examples file (naming the file and line).
    """
    by_task: dict[str, list[Example]] = {}
    formats: set[str] = set()
    for candidate in candidates:
        if candidate.ref is None or candidate.task is None:
            continue
        data = registry.read_file(candidate.ref, EXAMPLES_FILE) or b""
        source = f"{candidate.ref}/{EXAMPLES_FILE}"
        try:
            rows = parse_examples(data, source) if data.strip() else []
        except InvalidArgument as error:
            raise ExamplesError(error.message, **error.details) from None
        formats |= _declared_formats(data)
        by_task.setdefault(candidate.task, []).extend(rows)
    chosen = []
    for task in dict.fromkeys(c.task for c in candidates if c.task):
        examples = list(dict.fromkeys(by_task.get(task, [])))
        if not examples:
            raise ExamplesError(f"no examples are registered for task {task!r}: pass --examples FILE.jsonl")
        try:
            chosen += sample_examples(examples, shots, seed)
        except ExamplesError as exc:
            raise ExamplesError(f"task {task!r}: {exc}") from None
    return chosen, formats


def _declared_formats(data: bytes) -> set[str]:
    formats = set()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("prompt_format"), str):
            formats.add(row["prompt_format"])
    return formats
