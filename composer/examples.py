"""Few-shot examples: reading them from JSON Lines, sampling them, and fingerprinting them.

An examples file has one JSON object per line, ``{"input": "...", "output": "..."}``; other
keys are ignored and blank lines are skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ExamplesError


@dataclass(frozen=True)
class Example:
    """One few-shot example: the model is shown ``input`` and scored on ``output``."""

    input: str
    output: str


def read_examples(path: str | Path) -> list[Example]:
    """Read a JSON Lines examples file.

    Raises ``ExamplesError`` when the file cannot be read, has no examples, or a line is not a
    JSON object with string ``input`` and ``output``; the message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExamplesError(f"cannot read examples file {path}: {exc}", path=str(path)) from exc
    examples = [_parse_line(line, path, number) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not examples:
        raise ExamplesError(f"{path}: no examples (expected JSON Lines with \"input\" and \"output\")",
                            path=str(path))
    return examples


def _parse_line(line: str, path: Path, number: int) -> Example:
    def bad(what: str) -> ExamplesError:
        return ExamplesError(f"{path}, line {number}: {what}", path=str(path), line=number)

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise bad(f"expected a JSON object with \"input\" and \"output\", got {type(row).__name__}")
    for key in ("input", "output"):
        if key not in row:
            raise bad(f"missing \"{key}\"")
        if not isinstance(row[key], str):
            raise bad(f"\"{key}\" must be a string, got {type(row[key]).__name__}")
    return Example(row["input"], row["output"])


def sample_examples(examples: Sequence[Example], shots: int, seed: int) -> list[Example]:
    """``shots`` examples chosen by ``seed``, in their original order; the same seed always
    picks the same ones.

    Raises ``ExamplesError`` when ``shots`` is below 1 or more than there are examples.
    """
    if shots < 1:
        raise ExamplesError(f"shots must be at least 1, got {shots}")
    if shots > len(examples):
        raise ExamplesError(f"asked for {shots} shots but there are only {len(examples)} examples")
    # random.Random(seed).sample is stable across Python versions for a given population size.
    chosen = sorted(random.Random(seed).sample(range(len(examples)), shots))
    return [examples[i] for i in chosen]


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 (hex) of the examples as canonical JSON; order matters, as it does for sampling."""
    rows = [{"input": e.input, "output": e.output} for e in examples]
    canonical = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
