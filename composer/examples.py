"""Few-shot examples: reading them (with the hub's one parser of examples files), sampling
them, and fingerprinting them."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

from loramgr.hub.errors import InvalidArgument
from loramgr.hub.examples_file import ExampleRecord, check_examples_file

from .errors import ExamplesError

# One few-shot example (``input``, ``output``): the hub's record, so what the hub hands out
# (``Hub.examples()``) is what the composer takes.
Example = ExampleRecord


def read_examples(path: str | Path) -> list[Example]:
    """Read a JSON Lines examples file (``loramgr.hub.examples_file``).

    Raises ``ExamplesError`` when the file cannot be read, has no examples, or a line is not a
    JSON object with string ``input`` and ``output``; the message names the file and line.
    """
    try:
        return check_examples_file(path)
    except InvalidArgument as error:
        raise ExamplesError(error.message, **error.details) from None


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
