"""The few-shot examples file format: JSON Lines of ``{"input": "...", "output": "..."}``.

The one parser of examples files: ``push --examples``, an ``examples.jsonl`` inside a pushed
folder or an HF commit, ``push_stored``, ``Hub.examples()`` and the composer all read them
here, so a file the hub stored is one the composer can use. Other keys are ignored and blank
lines skipped. A bad file raises ``InvalidArgument`` with the message ``"<file>, line N: ..."``
and the details ``path`` and ``line``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidArgument

EXAMPLES_FILE = "examples.jsonl"
_SHAPE = '{"input": "...", "output": "..."}'


@dataclass(frozen=True)
class ExampleRecord:
    """One few-shot example: the model is shown ``input`` and scored on ``output``."""

    input: str
    output: str


def parse_examples(data: str | bytes, source: str) -> list[ExampleRecord]:
    """The examples in JSON Lines ``data``; ``source`` names it in messages (a path, or
    ``NS/NAME/examples.jsonl``). Raises ``InvalidArgument`` naming the line of a bad row."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"cannot read examples file {source}: not UTF-8 text ({exc})",
                                  path=source) from None
    return [_parse_line(line, source, number)
            for number, line in enumerate(data.splitlines(), start=1) if line.strip()]


def _parse_line(line: str, source: str, number: int) -> ExampleRecord:
    def bad(problem: str) -> InvalidArgument:
        return InvalidArgument(f"{source}, line {number}: {problem}", path=source, line=number)

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise bad("nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise bad(f"not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(row, dict):
        raise bad(f"expected a JSON object {_SHAPE}, got {type(row).__name__}")
    for key in ("input", "output"):
        if key not in row:
            raise bad(f'missing "{key}"')
        if not isinstance(row[key], str):
            raise bad(f'"{key}" must be a string, got {type(row[key]).__name__}')
    return ExampleRecord(row["input"], row["output"])


def read_examples_file(path: str | Path, *, source: str | None = None) -> list[ExampleRecord]:
    """The examples in the file at ``path`` (``source``, else the path, names it in messages).
    Raises ``InvalidArgument`` when it cannot be read or a line is bad."""
    path = Path(path)
    source = source or str(path)
    if not path.is_file():
        problem = "it is not a regular file" if path.exists() else "it does not exist"
        raise InvalidArgument(f"cannot read examples file {source}: {problem}", path=source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read examples file {source}: {exc.strerror or exc}", path=source) from None
    return parse_examples(data, source)


def check_examples(records: list[ExampleRecord], source: str) -> list[ExampleRecord]:
    """``records`` when there is at least one; raises ``InvalidArgument`` for none."""
    if not records:
        raise InvalidArgument(f"{source}: no examples (expected JSON Lines of {_SHAPE})", path=source)
    return records


def check_examples_file(path: str | Path, *, source: str | None = None) -> list[ExampleRecord]:
    """The examples of a non-empty, well-formed examples file. Raises ``InvalidArgument``."""
    return check_examples(read_examples_file(path, source=source), source or str(path))
