"""``ComposeOptions``: every setting of a composition, typed, frozen and validated once.

The CLI builds one from its flags (its choices and defaults come from here and ``choices``), the Python API
takes one (or the same names as keywords), and the lineage of a composed adapter records it,
so a composition can be run again from its lineage alone (``ComposeOptions.from_dict``).

Settings whose default depends on the search (``budget``, ``granularity``, and the search itself)
default to None and are filled in once, so what is recorded is what ran: the per-block gradient
search, unless ``search="nevergrad"`` or an ``optimizer`` is named (a nevergrad setting) picks the
gradient-free search.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

from .choices import (DEFAULT_BOUNDS, DEFAULT_BUDGETS, DEFAULT_GRANULARITIES, DEFAULT_L1, DEFAULT_LEARNING_RATE,
                      DEFAULT_OPTIMIZER, DEFAULT_PROMPT_FORMAT, DEFAULT_SCREEN_TOP, DEFAULT_SEARCH,
                      DEFAULT_SHORTLIST, GRANULARITIES, MODES, PROMPT_FORMATS, SEARCHES)
from .errors import CompositionError


@dataclass(frozen=True)
class ComposeOptions:
    """How ``compose`` searches and merges.

    - ``shots``: examples used (per task when drawn from the registry); None = all given;
    - ``search``: ``gradient`` (Adam on the weights, the default) or ``nevergrad`` (gradient-free,
      LoraHub's; the default when an ``optimizer`` is named);
    - ``budget``: forward+backward steps (gradient, default 20) or evaluations (nevergrad, 40);
    - ``mode``: ``delta`` (exact weighted sum of updates) or ``lorahub`` (factor-wise mix);
    - ``optimizer``, ``workers``: the nevergrad optimizer and candidates per batched forward;
    - ``granularity``, ``learning_rate``: gradient search only: one weight per module and layer
      block (the default), or per module;
    - ``l1``: LoraHub's ``l1 * mean|w|``; ``bounds``: the weights' range;
    - ``screen``: score the plain sum and each module alone first;
    - ``screen_top``: gradient search in delta mode: the screen scores alone only the K modules
      whose loss falls fastest from w = 0 (one forward and backward ranks them all);
      0 (the default) scores every module alone (as the nevergrad search and lorahub mode always do);
    - ``shots_per_step``: gradient search only: back-propagate that many examples per step, in
      turn, and score every example once per pass over them (the only losses kept); None (the
      default) uses every example at every step;
    - ``patience``: stop after that many steps or evaluations without gain; 0 (the default) or
      None spends the whole budget;
    - ``rank``: re-compress the merged adapter to at most this rank;
    - ``prompt_format``: ``plain`` or ``chat`` (see ``composer.prompts``);
    - ``shortlist``: with a whole-hub pool, how many modules the search gets (top K alone).
    """

    shots: int | None = 5
    budget: int | None = None
    mode: str = "delta"
    search: str | None = None
    optimizer: str | None = None
    workers: int = 1
    granularity: str | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE
    l1: float = DEFAULT_L1
    bounds: tuple[float, float] = DEFAULT_BOUNDS
    screen: bool = True
    screen_top: int | None = None
    shots_per_step: int | None = None
    patience: int | None = 0
    rank: int | None = None
    seed: int = 0
    prompt_format: str = DEFAULT_PROMPT_FORMAT
    shortlist: int = DEFAULT_SHORTLIST

    def __post_init__(self):
        object.__setattr__(self, "bounds", tuple(self.bounds))
        self._fill_search_defaults()
        _whole("budget", self.budget, 1)
        _whole("workers", self.workers, 1)
        _whole("seed", self.seed, 0)
        _whole("shortlist", self.shortlist, 1)
        _whole("patience", self.patience, 0)
        for name in ("shots", "rank", "shots_per_step"):
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name), 1)
        _choice("mode", self.mode, MODES)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("prompt_format", self.prompt_format, PROMPT_FORMATS)
        if self.granularity != "module" and self.search != "gradient":
            raise CompositionError("granularity 'block' needs search 'gradient': only a gradient fits one "
                                   "weight per module and layer block cheaply")
        if self.shots_per_step is not None and self.search != "gradient":
            raise CompositionError("shots_per_step needs search 'gradient': the nevergrad search has no steps to "
                                   "split")
        for name in ("l1", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise CompositionError(f"{name} must be a finite number >= 0, got {value!r}")
        low, high = self.bounds
        if not (math.isfinite(low) and math.isfinite(high) and low <= 0 <= high and low < high):
            raise CompositionError(f"bounds must be two finite numbers with low <= 0 <= high, got {self.bounds!r}")
        if not isinstance(self.optimizer, str) or not self.optimizer:
            raise CompositionError(f"optimizer must be a nevergrad optimizer name, got {self.optimizer!r}")
        if not isinstance(self.screen, bool):
            raise CompositionError(f"screen must be true or false, got {self.screen!r}")

    def _fill_search_defaults(self) -> None:
        """The search (named, or nevergrad when an optimizer is, else the default) and the
        settings whose default is that search's own."""
        search = self.search
        if search is None:
            search = "nevergrad" if self.optimizer is not None else DEFAULT_SEARCH
        _choice("search", search, SEARCHES)
        if search == "gradient" and self.optimizer is not None and self.optimizer != DEFAULT_OPTIMIZER:
            raise CompositionError(f"optimizer {self.optimizer!r} is a nevergrad setting: it needs search "
                                   "'nevergrad' (the gradient search uses Adam)")
        slopes = search == "gradient" and self.mode == "delta"
        if self.screen_top is not None:
            _whole("screen_top", self.screen_top, 0)
            if self.screen_top and not slopes:
                raise CompositionError("screen_top needs search 'gradient' in mode 'delta': the slopes at w = 0 "
                                       "that rank the modules come from its backward pass (lorahub's are 0)")
        # Only the gradient search in delta mode has slopes to rank by; the others screen every module.
        screen_top = self.screen_top if self.screen_top is not None else (DEFAULT_SCREEN_TOP if slopes else 0)
        filled = dict(search=search, screen_top=screen_top, optimizer=self.optimizer or DEFAULT_OPTIMIZER,
                      budget=DEFAULT_BUDGETS[search] if self.budget is None else self.budget,
                      granularity=self.granularity or DEFAULT_GRANULARITIES[search],
                      patience=0 if self.patience is None else self.patience)
        for name, value in filled.items():
            object.__setattr__(self, name, value)

    @property
    def stop_after(self) -> int | None:
        """The search functions' ``patience``: None when the whole budget is spent."""
        return self.patience or None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bounds"] = list(self.bounds)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ComposeOptions":
        """Options from ``to_dict()`` output (e.g. a lineage); unknown keys are ignored, so a
        lineage written by a later version still reads, and one written before the default search
        changed gets the settings it ran with (NGOpt, 40 evaluations, no early stop)."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        if given.get("search") is None or given.get("patience") is None:  # written by an earlier version
            given = given | {k: v for k, v in _EARLIER_DEFAULTS.items() if given.get(k) is None}
        if given.get("screen_top") is None:  # written before the slope screen: every module was screened
            given["screen_top"] = 0
        return cls(**given)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# What ComposeOptions() meant before the per-block gradient search became the default.
_EARLIER_DEFAULTS = {"search": "nevergrad", "budget": 40, "granularity": "module", "patience": 0}


def _whole(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise CompositionError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CompositionError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
