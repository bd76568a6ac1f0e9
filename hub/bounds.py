"""Bounds on the numbers users send: version numbers, ranks, limits, seeds, grace periods.

They reach the metadata store (32-bit integer columns on PostgreSQL; Python's sqlite3 raises
``OverflowError`` past 2**63) and JSON answers (which cannot carry NaN or infinity), so they are
checked once, at the boundary, with ``InvalidArgument`` for anything out of range.
"""

from __future__ import annotations

import math
import re

# Version numbers, ranks, limits and seeds are 32-bit integers in the metadata store.
MAX_INT32 = 2 ** 31 - 1
# A grace period longer than this (about 31 million years) is a typo.
MAX_GRACE_SECONDS = 1e15
# ASCII digits only: str.isdigit() is also true for '²', and int() reads '١٢' and '1_000'.
_NUMBER = re.compile(r"[0-9]{1,10}")


def is_ascii_number(text) -> bool:
    """Whether ``text`` is a whole number of ASCII digits no larger than ``MAX_INT32``."""
    return isinstance(text, str) and _NUMBER.fullmatch(text) is not None and int(text) <= MAX_INT32


def is_finite_number(value) -> bool:
    """An int or float JSON can carry: no bool, no NaN or infinity, no int past 2**63."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 2 ** 63


def check_whole_number(value, what: str, *, minimum: int = 0, maximum: int = MAX_INT32) -> int:
    """``value`` if it is an int (not a bool) from ``minimum`` to ``maximum``; else ``InvalidArgument``."""
    from .errors import InvalidArgument

    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge number"
        raise InvalidArgument(f"{what} must be a whole number from {minimum} to {maximum}, not {shown[:40]}")
    return value


def check_grace_seconds(value) -> float:
    """A gc grace period: a finite number of seconds from 0 to ``MAX_GRACE_SECONDS``
    (NaN would compare false with every age and delete everything). Raises ``InvalidArgument``."""
    from .errors import InvalidArgument

    if not is_finite_number(value) or not 0 <= value <= MAX_GRACE_SECONDS:
        shown = repr(value) if is_finite_number(value) or not isinstance(value, int) else "a huge number"
        raise InvalidArgument(f"the gc grace period must be a number of seconds from 0 to {MAX_GRACE_SECONDS:g}, "
                              f"not {shown[:40]}")
    return float(value)
