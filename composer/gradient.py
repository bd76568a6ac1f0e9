"""Gradient search for adapter weights: the weights are a few scalars, so one forward and one
backward pass through the frozen model give every partial derivative at once.

The composite is injected once (as for the nevergrad search); the weights are a torch leaf
tensor set with ``InjectedLora.set_weight_tensors``, so the loss back-propagates to them. Adam
takes a step, the weights are projected back into the bounds (clamped), and the objective is
LoraHub's: the few-shot loss plus ``l1 * mean|w|`` (its subgradient, ``sign(w)``, 0 at 0).

Granularity ``module`` fits one weight per adapter (LoraHub's ``w``); ``block`` fits one per
adapter and layer block (``encoder.block.3``, ``model.layers.7``: the module path up to its
first number), which only a gradient can fit cheaply: ``n x blocks`` weights cost the same
backward as ``n``.
"""

from __future__ import annotations

import math
import numbers
import re
import time
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import CompositionError
from .injection import InjectedLora, inject_composite
from .lora import LoraWeights
from .objective import (DEFAULT_L1, FewShotBatch, Objective, Score, few_shot_losses, few_shot_losses_with_grad,
                        split_batch)
from .search import (DEFAULT_BOUNDS, DEFAULT_TOL, Evaluation, SearchResult, _check_arguments, _check_patience,
                     _check_rescored, screening_points)

GRANULARITIES = ("module", "block")
DEFAULT_LEARNING_RATE = 0.3  # Adam's step; 0.3 reached LoraHub's loss sooner than 0.1 or 0.03 on the lab
ALL_LAYERS = "all"  # the block of a module path without a layer number
_LAYER_NUMBER = re.compile(r"^(.*?\.\d+)(?:\.|$)")


def layer_block(path: str) -> str:
    """The layer block of a module path: the path up to and including its first number
    (``encoder.block.1.layer.0.SelfAttention.q`` -> ``encoder.block.1``), ``"all"`` without one."""
    match = _LAYER_NUMBER.match(path)
    return match.group(1) if match else ALL_LAYERS


def search_weights_gradient(model: nn.Module, adapters: Sequence[LoraWeights], examples_batch: FewShotBatch, *,
                            mode: str = "lorahub", budget: int = 40, seed: int = 0, l1: float = DEFAULT_L1,
                            bounds: tuple[float, float] = DEFAULT_BOUNDS, granularity: str = "module",
                            learning_rate: float = DEFAULT_LEARNING_RATE, screen: bool = True,
                            screen_top: int | None = None, shots_per_step: int | None = None,
                            patience: int | None = None,
                            tol: float = DEFAULT_TOL,
                            callback: Callable[[int, float], None] | None = None) -> SearchResult:
    """Fit weights for ``adapters`` by gradient descent on the few-shot loss + ``l1 * mean|w|``.

    ``budget`` is the number of forward+backward steps. With ``screen`` one batched forward
    (no backward) first scores the plain sum and each adapter alone, as the nevergrad search
    does, and the descent starts from the best of them (else from ``w = 0``; in ``lorahub``
    mode the mix is quadratic in ``w``, its gradient at 0 is zero, so it starts from the best
    point that is not 0). ``screen_top=K`` (delta mode) screens alone only the ``K`` adapters
    whose loss falls fastest from ``w = 0``: one forward and backward at 0 gives every adapter's
    slope there, so the screen's forward holds ``K + 1`` candidates instead of ``n + 1`` (None or
    0: every adapter). The best point scored wins, ``w = 0`` included; it is re-scored on its
    own. ``shots_per_step=k`` makes the steps stochastic: each back-propagates the next ``k``
    examples only (``split_batch``; about ``k / examples`` of a full step's cost), and after every
    pass over them one forward scores the point on all examples, the only losses kept (history,
    callback, the winner); ``budget`` then counts these small steps. ``patience`` stops after that
    many kept losses without a gain above ``tol``. There is
    nothing random: ``seed`` is recorded, and the same inputs give the same weights.

    ``granularity="block"`` fits one weight per adapter and layer block (see ``layer_block``);
    the result's ``module_weights`` then holds the weights of every injected module, ready for
    ``combine(..., module_weights=...)``, ``block_weights`` the fitted ones and ``weights``
    their mean over blocks. ``history`` holds the screening points (``n`` weights each), then
    one entry per step (for ``block``, the ``n x blocks`` weights flattened adapter by adapter).
    ``callback(evaluations_done, best_loss)`` runs after each forward.
    The model is left as it was (its parameters' ``requires_grad`` included).

    Raises ``CompositionError`` for a budget below 1, bad bounds, a negative ``l1``, an unknown
    mode or granularity, a learning rate that is not a positive number, and whatever
    ``inject_composite`` raises.
    """
    _check_arguments(budget, 1, bounds, mode, l1)
    _check_patience(patience, tol)
    if granularity not in GRANULARITIES:
        raise CompositionError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) \
            or not (math.isfinite(learning_rate) and learning_rate > 0):
        raise CompositionError(f"the learning rate must be a number > 0, got {learning_rate!r}")
    n = len(adapters)
    started = time.perf_counter()
    with inject_composite(model, adapters, mode=mode) as composite, _frozen(model):
        objective = Objective(composite, examples_batch, l1=l1)
        blocks = sorted({layer_block(path) for path in composite.modules}) if granularity == "block" else [ALL_LAYERS]
        column = {path: blocks.index(layer_block(path)) if granularity == "block" else 0 for path in composite.modules}
        history: list[Evaluation] = []
        if screen and screen_top and screen_top < n and mode == "delta":
            initial, slopes = _slopes_at_zero(model, composite, column, len(blocks), examples_batch)
            alone = np.argsort(slopes, kind="stable")[:screen_top]
        else:
            initial, alone = objective.score(np.zeros(n)), None
        start, best_matrix, best = _start(objective, initial, n, mode, screen, history, alone)
        if callback is not None and history:
            callback(len(history), best.loss)
        device = next(iter(model.parameters())).device
        W = torch.tensor(np.repeat(start[:, None], len(blocks), axis=1), dtype=torch.float32, device=device,
                         requires_grad=True)
        best_matrix = np.repeat(best_matrix[:, None], len(blocks), axis=1)
        descent = torch.optim.Adam([W], lr=learning_rate)
        groups = split_batch(examples_batch, shots_per_step) if shots_per_step else [examples_batch]
        stalled, reference, steps = 0, best.loss, 0
        low, high = bounds

        def record(values: np.ndarray, task: float) -> bool:
            """Keep the point if it is the best yet; True when patience says stop."""
            nonlocal best_matrix, best, stalled, reference
            score = Score(task + _l1_of(values, l1), task)
            history.append(Evaluation(tuple(values.flatten().tolist()), score.loss, score.task_loss))
            if score.loss < best.loss:
                best_matrix, best = values, score
            stalled, reference = (0, best.loss) if best.loss < reference - tol else (stalled + 1, reference)
            if callback is not None:
                callback(len(history), best.loss)
            return patience is not None and stalled >= patience

        for steps in range(1, budget + 1):
            descent.zero_grad(set_to_none=True)
            composite.set_weight_tensors(_per_module(W, column))
            task = few_shot_losses_with_grad(model, groups[(steps - 1) % len(groups)])[0]
            (task + l1 * W.abs().mean()).backward()
            if len(groups) == 1 and record(W.detach().cpu().double().numpy(), float(task.detach())):
                break
            descent.step()
            with torch.no_grad():
                W.clamp_(low, high)  # projection back into the bounds
            if len(groups) > 1 and (steps % len(groups) == 0 or steps == budget):
                # A group's loss is not the objective: score the point on every example, once a pass.
                values = W.detach().cpu().double().numpy()
                if record(values, _task_loss_at(composite, values, column, examples_batch)):
                    break
        final = _rescore(objective, composite, best_matrix, column, examples_batch, l1)
    _check_rescored(best.loss, final.loss)
    block_weights = module_weights = None
    if granularity == "block":
        block_weights = {block: tuple(best_matrix[:, j].tolist()) for j, block in enumerate(blocks)}
        module_weights = {path: tuple(best_matrix[:, column[path]].tolist()) for path in composite.modules}
    return SearchResult(weights=tuple(best_matrix.mean(axis=1).tolist()), loss=final.loss, task_loss=final.task_loss,
                        initial_loss=initial.loss, history=tuple(history), evaluations=len(history),
                        seconds=time.perf_counter() - started, optimizer=f"Adam({granularity})", seed=seed,
                        mode=mode, block_weights=block_weights, module_weights=module_weights,
                        stopped_early=steps < budget)


def _slopes_at_zero(model: nn.Module, composite: InjectedLora, column: dict[str, int], blocks: int,
                    batch: FewShotBatch) -> tuple[Score, np.ndarray]:
    """(the objective at ``w = 0``, each adapter's slope there): one forward and backward give
    the derivative of the few-shot loss along each adapter alone (all its blocks at once), the
    linear guess at which single adapter lowers the loss most, for ``n`` adapters at once."""
    device = next(iter(model.parameters())).device
    zero = torch.zeros(composite.num_adapters, blocks, dtype=torch.float32, device=device, requires_grad=True)
    composite.set_weight_tensors(_per_module(zero, column))
    task = few_shot_losses_with_grad(model, batch)[0]
    task.backward()
    slopes = zero.grad.sum(dim=1).double().cpu().numpy()
    return Score(float(task.detach()), float(task.detach())), slopes


def _start(objective: Objective, initial: Score, n: int, mode: str, screen: bool, history: list[Evaluation],
           alone: np.ndarray | None = None):
    """(start point, best point so far, its score); ``w = 0`` (scored as ``initial``) is a candidate.
    ``alone``: the adapters the screen scores alone (all when None).

    lorahub's mix is quadratic in ``w``: its gradient at 0 is zero, so there the descent starts
    from the best screened point even when ``w = 0`` scores better (or, unscreened, from the
    uniform ``1/n``)."""
    zero = np.zeros(n)
    if not screen:
        return (np.full(n, 1.0 / n) if mode == "lorahub" else zero), zero, initial
    points = np.stack(screening_points(n))
    if alone is not None:
        points = np.concatenate([points[:1], np.eye(n)[alone]])
    scores = objective.score_many(points)
    for point, score in zip(points, scores):
        history.append(Evaluation(tuple(point.tolist()), score.loss, score.task_loss))
    first = min(range(len(points)), key=lambda i: scores[i].loss)
    if scores[first].loss < initial.loss:
        return points[first], points[first], scores[first]
    return (points[first] if mode == "lorahub" else zero), zero, initial


def _per_module(W: torch.Tensor, column: dict[str, int]) -> dict[str, torch.Tensor]:
    """One ``1 x n`` weight row per injected module, from the ``n x blocks`` parameter."""
    columns = W.t()
    return {path: columns[j].unsqueeze(0) for path, j in column.items()}


def _l1_of(values: np.ndarray, l1: float) -> float:
    return float(l1 * np.abs(values).mean())


def _task_loss_at(composite: InjectedLora, matrix: np.ndarray, column: dict[str, int], batch: FewShotBatch) -> float:
    """The few-shot loss (no L1) at the ``n x blocks`` weights, without autograd."""
    device = next(iter(composite.model.parameters())).device
    with torch.no_grad():
        composite.set_weight_tensors(_per_module(torch.tensor(matrix, dtype=torch.float32, device=device), column))
    return float(few_shot_losses(composite.model, batch)[0])


def _rescore(objective: Objective, composite: InjectedLora, matrix: np.ndarray, column: dict[str, int],
             batch: FewShotBatch, l1: float) -> Score:
    """The objective at the winner, scored alone without autograd: by the ordinary in-place
    path when one weight per adapter was fitted, so the search and export agree with it."""
    if matrix.shape[1] == 1:
        return objective.score(matrix[:, 0])
    task = _task_loss_at(composite, matrix, column, batch)
    return Score(task + _l1_of(matrix, l1), task)


@contextmanager
def _frozen(model: nn.Module):
    """No gradients for the base model's own parameters (only the weights are fitted)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
