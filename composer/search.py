"""Gradient-free search for adapter weights with nevergrad, LoraHub-style.

The composite is injected into the model once; each step only sets new weights and runs one
forward over the few-shot batch (``num_workers`` candidates share a forward).
"""

from __future__ import annotations

import difflib
import math
import numbers
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import nevergrad as ng
from torch import nn

from .errors import CompositionError
from .injection import MODES, inject_composite
from .lora import LoraWeights
from .objective import DEFAULT_L1, FewShotBatch, Objective

DEFAULT_OPTIMIZER = "NGOpt"  # LoraHub's choice
DEFAULT_BOUNDS = (-1.5, 1.5)
DEFAULT_TOL = 1e-4  # early stopping: a smaller gain in the loss does not count as progress
# Re-scoring the winner alone must give the loss the search saw in a batch, up to float noise.
_RESCORE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Evaluation:
    """One scored candidate, in the order the search asked for them."""

    weights: tuple[float, ...]
    loss: float
    task_loss: float


@dataclass(frozen=True)
class SearchResult:
    """The best weights found and how the search went.

    ``loss`` is the objective (task loss + L1 term) at ``weights``, re-scored on its own;
    ``initial_loss`` is the objective at ``w = 0`` (the base model), scored before the search.
    """

    weights: tuple[float, ...]
    loss: float
    task_loss: float
    initial_loss: float
    history: tuple[Evaluation, ...]
    evaluations: int
    seconds: float
    optimizer: str
    seed: int
    mode: str
    # Finer weights (gradient search, granularity "block"): per layer block and per injected
    # module path, one weight per adapter. ``weights`` then is their mean over blocks, a summary;
    # pass ``module_weights`` to ``combine`` to export what was scored.
    block_weights: dict[str, tuple[float, ...]] | None = None
    module_weights: dict[str, tuple[float, ...]] | None = None
    stopped_early: bool = False


def search_weights(model: nn.Module, adapters: Sequence[LoraWeights], examples_batch: FewShotBatch, *,
                   mode: str = "lorahub", budget: int = 40, optimizer: str = DEFAULT_OPTIMIZER, seed: int = 0,
                   l1: float = DEFAULT_L1, bounds: tuple[float, float] = DEFAULT_BOUNDS, num_workers: int = 1,
                   callback: Callable[[int, float], None] | None = None, screen: bool = True,
                   patience: int | None = None, tol: float = DEFAULT_TOL) -> SearchResult:
    """Search weights for ``adapters`` that minimise the few-shot loss plus ``l1 * mean|w|``.

    ``budget`` candidates are scored (``num_workers`` per forward); the same seed and inputs
    give the same weights. The best of the initial point (``w = 0``) and every candidate wins.
    With ``screen`` the first candidates are suggested rather than drawn: the plain sum
    (every weight 1) and each adapter alone, as far as the budget allows. Starting from w = 0, a
    40-evaluation search over 20+ weights rarely lands on one adapter alone, and the
    optimizer then continues from the best of these.
    ``callback(evaluations_done, best_loss)`` is called after each forward. The model is left
    as it was. With ``patience`` the search stops early once ``patience`` evaluations in a row
    (after the screening points) have not improved the best loss by more than ``tol``; the
    budget is then an upper bound.

    Raises ``CompositionError`` for a budget or worker count below 1, bad bounds, a negative
    ``l1``, an unknown optimizer (naming close matches) or mode, and whatever
    ``inject_composite`` raises.
    """
    _check_arguments(budget, num_workers, bounds, mode, l1)
    _check_patience(patience, tol)
    optimizer_class = _optimizer_class(optimizer)
    n = len(adapters)
    started = time.perf_counter()
    with inject_composite(model, adapters, mode=mode) as composite, _metamodel_numpy_compat():
        objective = Objective(composite, examples_batch, l1=l1)
        initial = objective.score(np.zeros(n))
        parametrization = ng.p.Array(init=np.zeros(n), lower=bounds[0], upper=bounds[1])
        parametrization.random_state = np.random.RandomState(seed)
        try:
            search = optimizer_class(parametrization=parametrization, budget=budget, num_workers=num_workers)
        except (ImportError, ValueError, TypeError) as exc:
            raise CompositionError(f"optimizer {optimizer} cannot run here: {exc}") from exc
        try:
            suggestions = screening_points(n) if screen else []
            best_weights, best, history = _run(search, objective, initial, budget, num_workers, callback,
                                               suggestions, patience, tol)
        finally:
            _stop_optimizer_threads(search)
        final = objective.score(best_weights)
    _check_rescored(best.loss, final.loss)
    return SearchResult(weights=tuple(best_weights.tolist()), loss=final.loss, task_loss=final.task_loss,
                        initial_loss=initial.loss, history=tuple(history), evaluations=len(history),
                        seconds=time.perf_counter() - started, optimizer=optimizer, seed=seed, mode=mode,
                        stopped_early=len(history) < budget)


def screening_points(n: int) -> list[np.ndarray]:
    """The plain sum of all adapters, then each adapter alone (n > 1)."""
    points = [np.ones(n)]
    if n > 1:
        points += list(np.eye(n))
    return points


def _ask(search, suggestions: list[np.ndarray]):
    if suggestions:
        search.suggest(suggestions.pop(0))
    return search.ask()


def _run(search, objective: Objective, initial, budget: int, num_workers: int, callback,
         suggestions: list[np.ndarray], patience: int | None = None, tol: float = DEFAULT_TOL):
    """Ask, score (``num_workers`` per forward) and tell until the budget is spent (or, with
    ``patience``, the loss has stalled); return the best weights (``w = 0`` unless a candidate
    beats it), their score and every evaluation."""
    best_weights, best = np.zeros(objective.composite.num_adapters), initial
    history: list[Evaluation] = []
    screening = len(suggestions)
    suggestions = list(suggestions)
    stalled, reference = 0, initial.loss  # evaluations since the best improved by more than tol
    while len(history) < budget:
        asked = [_ask(search, suggestions) for _ in range(min(num_workers, budget - len(history)))]
        candidates = np.stack([np.asarray(c.value, dtype=np.float64) for c in asked])
        for candidate, values, score in zip(asked, candidates, objective.score_many(candidates)):
            search.tell(candidate, score.loss)
            history.append(Evaluation(tuple(values.tolist()), score.loss, score.task_loss))
            if score.loss < best.loss:
                best_weights, best = values, score
            if best.loss < reference - tol:
                stalled, reference = 0, best.loss
            elif len(history) > screening:
                stalled += 1
        if callback is not None:
            callback(len(history), best.loss)
        if patience is not None and stalled >= patience:
            break
    return best_weights, best, history


def _check_patience(patience: int | None, tol: float) -> None:
    if patience is not None and (not isinstance(patience, numbers.Integral) or patience < 1):
        raise CompositionError(f"patience must be a whole number >= 1 (or None), got {patience!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise CompositionError(f"the early-stopping tolerance must be a number >= 0, got {tol!r}")


def _stop_optimizer_threads(search) -> None:
    """Stop the threads of nevergrad's scipy-based optimizers (Cobyla, Powell, ... also inside
    NGOpt): each waits for its next score and is only stopped when the optimizer is garbage
    collected, which a traceback kept after an error or Ctrl-C prevents — and a waiting
    non-daemon thread keeps the process from exiting."""
    seen, stack = set(), [search]
    while stack:
        optimizer = stack.pop()
        if id(optimizer) in seen:
            continue
        seen.add(id(optimizer))
        thread = getattr(optimizer, "_messaging_thread", None)
        if thread is not None:
            thread.stop()
        stack.extend(value for value in vars(optimizer).values() if isinstance(value, ng.optimizers.base.Optimizer))


def _check_arguments(budget: int, num_workers: int, bounds: tuple[float, float], mode: str, l1: float) -> None:
    if not isinstance(budget, numbers.Integral) or budget < 1:
        raise CompositionError(f"the search budget must be a whole number >= 1, got {budget!r}")
    if not isinstance(num_workers, numbers.Integral) or num_workers < 1:
        raise CompositionError(f"num_workers must be a whole number >= 1, got {num_workers!r}")
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high) and low <= 0 <= high and low < high):
        # The search starts from w = 0, the base model.
        raise CompositionError(f"bounds must be two finite numbers with low <= 0 <= high, low < high; got {bounds!r}")
    if mode not in MODES:
        raise CompositionError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not (math.isfinite(l1) and l1 >= 0):
        raise CompositionError(f"the L1 strength must be a number >= 0, got {l1!r}")


def _optimizer_class(name: str):
    registry = ng.optimizers.registry
    if name in registry:
        return registry[name]
    by_lower = {key.lower(): key for key in registry}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_lower[c] for c in close)}?" if close else \
        f"; for example {DEFAULT_OPTIMIZER}, CMA, TwoPointsDE, OnePlusOne or RandomSearch"
    raise CompositionError(f"unknown optimizer {name!r}{hint}")


def _check_rescored(searched: float, rescored: float) -> None:
    if abs(searched - rescored) > _RESCORE_TOLERANCE * max(1.0, abs(searched)):
        raise CompositionError(
            f"the objective is not reproducible: the search scored the best weights {searched:.6f}, "
            f"scoring them again gave {rescored:.6f}; is the model deterministic (no dropout, eval mode)?")


@contextmanager
def _metamodel_numpy_compat():
    """Let nevergrad's metamodel run with numpy >= 2.4 while a search runs.

    nevergrad 1.0.12 (``optimization/metamodel.py``, ``learn_on_k_best``) calls ``float()`` on the
    one-element array scikit-learn's ``predict`` returns; numpy 2.4 turned that deprecated
    conversion into a ``TypeError``, which crashes NGOpt after a dozen evaluations in low
    dimension. Shadowing ``float`` in that module only restores the old conversion; it is
    undone after the search so nothing else sees it.
    """
    from nevergrad.optimization import metamodel

    if "float" in vars(metamodel):  # already shadowed by an enclosing search
        yield
        return
    metamodel.float = _float_of_one_element
    try:
        yield
    finally:
        del metamodel.float


def _float_of_one_element(value) -> float:
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    return float(value)
