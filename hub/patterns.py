"""PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup, safe against hostile keys and module names.

PEFT (``peft.utils.other.get_pattern_key``) takes the first key, in the config's order, for which
``re.match(rf"(.*\\.)?({key})$", module)`` succeeds: the key is the module's whole path or a
suffix of it starting after a ``.``. The uploader writes both the keys and (through the tensor
names) the module paths, so running those regexes unchecked on a server is a denial of service
(``(a+)+b`` against ``"a" * 28 + "!"`` takes seconds and, in Python's ``re``, holds the GIL).

Here:

- a *plain* key (``q_proj``, ``model.layers.0.self_attn.q_proj``: letters, digits, ``_``, ``-``
  and dots between them) is matched as a literal dotted suffix, by dictionary lookup: linear in the
  modules and independent of the number of keys. (PEFT reads its dots as "any character"; for
  real module paths the two agree.)
- any other key must be a small regular expression without backreferences, lookarounds, inline
  flags or repeated groups (``(...)*``, ``(...)+``, ``(...){n}``), and is matched with the
  ``regex`` engine under a CPU-time budget (it releases the GIL, and gives up with ``TimeoutError``).
- at most ``MAX_KEYS`` keys, ``MAX_REGEX_KEYS`` of them regular expressions, each at most
  ``MAX_KEY_LENGTH`` characters.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Callable, Sequence

import regex

MAX_KEYS = 4096
MAX_REGEX_KEYS = 64
MAX_KEY_LENGTH = 256
MAX_REPEAT = 256  # the largest n in a {m,n} quantifier
# CPU seconds (of the validating thread: a busy server does not shrink it) that all
# regular-expression keys of one adapter may spend matching, together.
MATCH_BUDGET_S = 2.0

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_ESCAPABLE = set("dDwWsS") | set(r".\-^$*+?()[]{}|/_:,=!<>#&~%@'\"` ")
_QUANTIFIERS = "*+?{"
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def is_plain_key(key: str) -> bool:
    return _PLAIN_KEY.fullmatch(key) is not None


def regex_problem(key: str) -> str | None:
    """Why ``key`` is not an allowed regular-expression key, or None when it is."""
    if len(key) > MAX_KEY_LENGTH:
        return f"is {len(key)} characters long (at most {MAX_KEY_LENGTH})"
    i, depth, previous = 0, 0, ""  # previous: "atom", "group" (a closed group) or "quantifier"
    while i < len(key):
        char = key[i]
        if char == "\\":
            escaped = key[i + 1:i + 2]
            if not escaped or escaped not in _ESCAPABLE:
                return f"uses the escape \\{escaped} (backreferences and special escapes are not allowed)"
            i, previous = i + 2, "atom"
            continue
        if char == "[":
            end = _class_end(key, i)
            if end is None:
                return "has an unclosed (or nested) character class"
            i, previous = end + 1, "atom"
            continue
        if char == "(":
            if key.startswith("(?", i) and not key.startswith("(?:", i):
                return "uses a (?...) construct (only (?:...) groups are allowed)"
            depth += 1
            i, previous = i + (3 if key.startswith("(?:", i) else 1), ""
            continue
        if char == ")":
            depth -= 1
            if depth < 0:
                return "has an unbalanced ')'"
            i, previous = i + 1, "group"
            continue
        if char in _QUANTIFIERS:
            repeat = _REPEAT.match(key, i) if char == "{" else None
            if char == "{" and repeat is None:
                i, previous = i + 1, "atom"  # a literal '{', as Python's re reads it
                continue
            if repeat is not None and any(int(n) > MAX_REPEAT for n in repeat.groups() if n):
                return f"repeats more than {MAX_REPEAT} times"
            lazy = char == "?" and previous == "quantifier"
            if previous in ("quantifier", "lazy") and not lazy:
                return "stacks quantifiers"
            if previous == "group" and char != "?":
                return "repeats a group ((...)*, (...)+ or (...){n}), which can take exponential time"
            i, previous = (repeat.end() if repeat else i + 1), ("lazy" if lazy else "quantifier")
            continue
        i, previous = i + 1, "atom"
    if depth:
        return "has an unclosed '('"
    return None


def _class_end(key: str, start: int) -> int | None:
    i = start + 1
    if key.startswith("^", i):
        i += 1
    if key.startswith("]", i):
        i += 1
    while i < len(key):
        if key[i] == "\\":
            i += 2
            continue
        if key[i] == "[":
            return None  # nested sets / set operations: not needed for module names
        if key[i] == "]":
            return i
        i += 1
    return None


class PatternTable:
    """The keys of one ``rank_pattern`` or ``alpha_pattern``, ready to look modules up.

    ``invalid(problem)`` builds the exception raised for a refused key (one line). ``deadline``
    (a ``time.thread_time()`` value: CPU time, so other threads' load does not count) bounds the
    time regular-expression keys may spend matching; share one between the tables of an adapter.
    """

    def __init__(self, keys: Sequence[str], what: str, invalid: Callable[[str], Exception], *,
                 deadline: float | None = None):
        if len(keys) > MAX_KEYS:
            raise invalid(f"{what} has {len(keys)} keys (at most {MAX_KEYS})")
        self.what, self.invalid = what, invalid
        self.deadline = time.thread_time() + MATCH_BUDGET_S if deadline is None else deadline
        self.plain: dict[str, int] = {}
        self.patterns: list[tuple[int, str, regex.Pattern]] = []
        for order, key in enumerate(keys):
            if len(key) > MAX_KEY_LENGTH:
                raise invalid(f"{what} key {_shown(key)} is {len(key)} characters long (at most {MAX_KEY_LENGTH})")
            if is_plain_key(key):
                self.plain.setdefault(key, order)
                continue
            problem = _compile_problem(key) or regex_problem(key)
            if problem is not None:
                raise invalid(f"{what} key {_shown(key)} {problem}; use module names such as 'q_proj' or "
                              "'layers.0.self_attn.q_proj'")
            self.patterns.append((order, key, regex.compile(rf"(.*\.)?({key})$")))
        if len(self.patterns) > MAX_REGEX_KEYS:
            raise invalid(f"{what} has {len(self.patterns)} regular-expression keys (at most {MAX_REGEX_KEYS}); "
                          "use plain module names")
        self.keys = list(keys)
        # Whether any of them matches, in one call: most modules match none, and then the keys need
        # not be tried one by one (no backreferences, so the groups' numbers do not matter).
        self.any_pattern = None
        if self.patterns:
            try:
                self.any_pattern = regex.compile(
                    r"(.*\.)?(?:" + "|".join(f"(?:{key})" for _, key, _ in self.patterns) + r")$")
            except (regex.error, OverflowError, RecursionError):
                pass  # then each key is tried in turn

    def key_for(self, module: str) -> str | None:
        """The key PEFT picks for ``module`` (the first in order that matches), or None."""
        best = len(self.keys)
        for suffix in _dotted_suffixes(module):
            order = self.plain.get(suffix)
            if order is not None and order < best:
                best = order
        if not self.patterns or self.patterns[0][0] >= best:
            return self.keys[best] if best < len(self.keys) else None
        try:
            if self.any_pattern is not None and not self._match(self.any_pattern, module):
                return self.keys[best] if best < len(self.keys) else None
            for order, key, pattern in self.patterns:
                if order >= best:
                    break
                if self._match(pattern, module):
                    return key
        except TimeoutError:
            raise self.invalid(f"{self.what} keys took over {MATCH_BUDGET_S:g} s to match the module "
                               "paths; use plain module names such as 'q_proj'") from None
        return self.keys[best] if best < len(self.keys) else None

    def _match(self, pattern: regex.Pattern, module: str) -> bool:
        remaining = self.deadline - time.thread_time()
        if remaining <= 0:
            raise TimeoutError
        return pattern.match(module, timeout=remaining) is not None


def _dotted_suffixes(module: str):
    yield module
    start = module.find(".")
    while start >= 0:
        yield module[start + 1:]
        start = module.find(".", start + 1)


def _compile_problem(key: str) -> str | None:
    # PEFT compiles with Python's re: a key only the regex engine reads would fail there.
    for engine in (re, regex):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "possible nested set": refused below anyway
                engine.compile(rf"(.*\.)?({key})$")
        except (re.error, regex.error, OverflowError, RecursionError, ValueError) as exc:
            return f"is not a valid regular expression ({exc})"
    return None


def _shown(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")
