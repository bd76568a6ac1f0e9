"""The lab's tasks: short string transductions over a small alphabet, each behind a keyword prefix.

An example is ``("rev: cab", "bac")``: the keyword (``rev:``) names the task, the payload after
it is 3-6 characters of the task's input format, the output is the task's function of the payload.
A tiny model learns any of them in seconds, and one model can hold several because the keyword
says which applies.

Every payload belongs to exactly one split, ``train`` or ``test``, decided by a hash of the
payload itself (`payload_split`): module data, few-shot candidates and oracle training data only
ever use ``train`` payloads, test sets only ``test`` payloads, so no test input was ever trained on.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Callable

LETTERS = "abcdefghij"
UPPER = LETTERS.upper()
DIGITS = "0123456789"
MIN_LEN, MAX_LEN = 3, 6
# One payload in TEST_SHARE (by hash) is reserved for test sets.
TEST_SHARE = 5


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _alnum(rng: random.Random, n: int) -> str:
    # At least one letter and one digit, so "drop the digits" and "keep the digits" both matter.
    chars = [rng.choice(LETTERS), rng.choice(DIGITS)] + [rng.choice(LETTERS + DIGITS) for _ in range(n - 2)]
    rng.shuffle(chars)
    return "".join(chars)


def _mixed(rng: random.Random, n: int) -> str:
    chars = [rng.choice(LETTERS), rng.choice(UPPER)] + [rng.choice(LETTERS + UPPER) for _ in range(n - 2)]
    rng.shuffle(chars)
    return "".join(chars)


# Input formats: name -> sampler(rng, length).
FORMATS: dict[str, Callable[[random.Random, int], str]] = {
    "lower": _letters,
    "upper": lambda rng, n: _letters(rng, n).upper(),
    "mixed": _mixed,
    "digits": lambda rng, n: "".join(rng.choice(DIGITS) for _ in range(n)),
    "alnum": _alnum,
}


def _shift(text: str, by: int) -> str:
    return "".join(LETTERS[(LETTERS.index(c) + by) % len(LETTERS)] for c in text)


@dataclass(frozen=True)
class Task:
    """One transduction: ``name`` is also its keyword prefix; ``fmt`` names its input format."""

    name: str
    fmt: str
    fn: Callable[[str], str]
    description: str

    @property
    def prefix(self) -> str:
        return f"{self.name}:"

    def render(self, payload: str) -> tuple[str, str]:
        """The (input, output) example for one payload."""
        return f"{self.prefix} {payload}", self.fn(payload)


TASKS: dict[str, Task] = {task.name: task for task in [
    Task("rev", "lower", lambda s: s[::-1], "reverse the string"),
    Task("up", "lower", str.upper, "uppercase every letter"),
    Task("shift", "lower", lambda s: _shift(s, 1), "shift each letter one forward (a->b, j->a)"),
    Task("unshift", "lower", lambda s: _shift(s, -1), "shift each letter one back (b->a, a->j)"),
    Task("dup", "lower", lambda s: "".join(c + c for c in s), "write each character twice"),
    Task("sort", "lower", lambda s: "".join(sorted(s)), "sort the characters"),
    Task("head", "lower", lambda s: s[:3], "keep the first three characters"),
    Task("tail", "lower", lambda s: s[-3:], "keep the last three characters"),
    Task("rotl", "lower", lambda s: s[1:] + s[:1], "rotate left by one (abc -> bca)"),
    Task("rotr", "lower", lambda s: s[-1:] + s[:-1], "rotate right by one (abc -> cab)"),
    Task("evens", "lower", lambda s: s[0::2], "keep the characters at even positions"),
    Task("odds", "lower", lambda s: s[1::2], "keep the characters at odd positions"),
    Task("pairs", "lower", lambda s: "".join(s[i:i + 2][::-1] for i in range(0, len(s), 2)),
         "swap each adjacent pair (abcd -> badc)"),
    Task("drop", "lower", lambda s: s[1:], "drop the first character"),
    Task("ends", "lower", lambda s: s[0] + s[-1], "keep the first and last characters"),
    Task("l2d", "lower", lambda s: "".join(str(LETTERS.index(c)) for c in s), "map letters to digits (a->0)"),
    Task("low", "upper", str.lower, "lowercase every letter"),
    Task("swap", "mixed", str.swapcase, "swap the case of every letter"),
    Task("d2l", "digits", lambda s: "".join(LETTERS[int(c)] for c in s), "map digits to letters (0->a)"),
    Task("nodig", "alnum", lambda s: "".join(c for c in s if not c.isdigit()), "remove the digits"),
    Task("digs", "alnum", lambda s: "".join(c for c in s if c.isdigit()), "keep only the digits"),
    Task("first", "lower", lambda s: s[0], "keep the first character"),
    Task("last", "lower", lambda s: s[-1], "keep the last character"),
]}


KEYWORDS = sorted({task.prefix for task in TASKS.values()})


def payload_split(payload: str) -> str:
    """``"test"`` for the payloads reserved for test sets, else ``"train"`` (stable across runs)."""
    return "test" if zlib.crc32(payload.encode()) % TEST_SHARE == 0 else "train"


def sample_payload(rng: random.Random, fmt: str, split: str) -> str:
    """A random payload of format ``fmt`` whose hash puts it in ``split``."""
    while True:
        payload = FORMATS[fmt](rng, rng.randint(MIN_LEN, MAX_LEN))
        if payload_split(payload) == split:
            return payload


def stream_rng(seed: int, *names: str) -> random.Random:
    """A generator private to one purpose (e.g. ``("module", "rev")``), stable for a seed.

    Separate streams keep each data set unchanged when another one is resized or added.
    """
    return random.Random(zlib.crc32("/".join((str(seed),) + names).encode()))


def derive_seed(seed: int, *names: str) -> int:
    """A 31-bit torch seed for one purpose (e.g. ``("t5", "rev")``), stable across runs and machines."""
    return zlib.crc32("/".join((str(seed),) + names).encode()) & 0x7FFFFFFF


def sample_examples(task: Task, rng: random.Random, n: int, split: str) -> list[tuple[str, str]]:
    """``n`` examples of ``task`` drawn from ``split`` payloads."""
    return [task.render(sample_payload(rng, task.fmt, split)) for _ in range(n)]


def copy_examples(rng: random.Random, n: int, prefixes: list[str], formats=None) -> list[tuple[str, str]]:
    """Copy examples: a random keyword of ``prefixes``, a payload of a random format, output = payload.

    The base models are pre-trained on these over every keyword of the lab, so they read every
    task format and can copy a payload, but know no task transformation: modules have something
    to adapt. Modules replay a share of them (without their own keyword) while training.
    """
    keys, formats = sorted(prefixes), sorted(formats or FORMATS)
    rows = []
    for _ in range(n):
        # One keyword in two rows, two in the third: the base also reads composite
        # instructions ("up:d2l: ...", a kind-3 target's format) and copies their payload.
        key = rng.choice(keys) if rng.random() < 2 / 3 else rng.choice(keys) + rng.choice(keys)
        payload = sample_payload(rng, rng.choice(formats), "train")
        rows.append((f"{key} {payload}", payload))
    return rows
