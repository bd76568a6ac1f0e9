"""Printing for the CLI: tables for people, JSON for scripts, progress bars on terminals."""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Iterator, Sequence

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def to_jsonable(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def strict_jsonable(value):
    """``value`` with every float JSON cannot carry (NaN, infinity) as ``None``: output that
    says ``Infinity`` is not JSON, and scripts reading it would fail."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_jsonable(v) for v in value]
    return value


def emit_json(value) -> None:
    data = strict_jsonable(to_jsonable(value))
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False))


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def print_table(rows: Sequence[Sequence], headers: Sequence[str]) -> None:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * w for w in widths))


def version_rows(versions) -> list[list]:
    return [[v.ref, v.task, v.base_model, v.rank, ",".join(v.target_modules), human_size(v.byte_size),
             v.source, v.created_at.replace("T", " ")[:16]] for v in versions]


VERSION_HEADERS = ["ref", "task", "base", "rank", "targets", "size", "source", "created"]


@contextmanager
def byte_progress(description: str, total: int | None, *, quiet: bool) -> Iterator:
    """A tqdm bar on a terminal's stderr; a no-op callback in --json mode or when piped."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=description, file=sys.stderr, leave=False) as bar:
        yield bar.update


def quiet_libraries() -> None:
    """Keep transformers' and PEFT's loading bars and deprecation chatter off the terminal:
    the CLI prints its own progress, and errors must stay one line."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    warnings.filterwarnings("ignore", message=".*RHOEND.*")  # scipy's COBYLA, run by nevergrad
