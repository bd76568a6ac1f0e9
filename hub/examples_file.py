"""The few-shot examples file format: JSON Lines of ``{"input": "...", "output": "..."}``."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidArgument

EXAMPLES_FILE = "examples.jsonl"


def read_examples_file(path: Path) -> list[dict]:
    """Parse an examples file; raises ``InvalidArgument`` naming the file and line of a bad row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"examples file {path} does not exist") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise InvalidArgument(f"examples file {path} is not a UTF-8 text file: {exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) \
                or not isinstance(row.get("output"), str):
            raise InvalidArgument(f'{path}, line {number}: expected {{"input": "...", "output": "..."}} '
                                  "with string values")
        rows.append({"input": row["input"], "output": row["output"]})
    return rows


def check_examples_file(path: Path) -> None:
    """Raise ``InvalidArgument`` unless ``path`` is a non-empty, well-formed examples file."""
    if not read_examples_file(path):
        raise InvalidArgument(f"examples file {path} holds no examples")
