"""Inject a weighted composite of LoRA adapters into a plain transformers model, once.

For every target module ``m`` (a linear layer), the injected model computes
``forward(x) = base(x) + delta_m(w) x`` for the weight vector ``w`` (one weight per adapter):

- ``delta``:   ``delta_m(w) x = sum_i w_i s_i B_i (A_i x)`` — the exact weighted sum of the
  updates. Kept factored: ``A = cat_i A_i`` (R x in) and ``B = cat_i s_i B_i`` (out x R),
  with each rank row weighted by its adapter's ``w_i``. A module missing from an adapter
  contributes nothing.
- ``lorahub``: ``delta_m(w) x = (sum_i w_i s_i B_i) ((sum_i w_i A_i) x)`` — LoraHub's
  factor-wise mix, with each adapter's scaling folded into ``B``. Needs equal shapes where
  a module is present; an adapter without the module is left out of both sums.

Changing ``w`` never touches the model: it writes into a few small tensors (the weights and,
per module, the mixed factors). Several weight vectors ("candidates") can be scored in one
forward: the caller repeats its batch ``K`` times and replica ``k`` uses row ``k`` of ``W``.
The delta is computed in float32 and added to the base output in the base output's dtype,
as PEFT does with its default float32 adapter weights.
"""

from __future__ import annotations

import weakref
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import CompositionError, IncompatibleAdapters, UnsupportedAdapter
from .lora import LoraWeights

MODES = ("lorahub", "delta")

# Models that currently carry an injected composite: a second injection would stack deltas.
_INJECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _assigned(t: torch.Tensor) -> bool:
    """A tensor from ``set_weight_tensors`` that in-place updates must not write into: part of an
    autograd graph, or made under ``torch.inference_mode``."""
    return t.requires_grad or t.is_inference()


class _DeltaTerm:
    """``delta`` mode for one module: rank rows of every adapter, each weighted by its ``w_i``."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, owner: torch.Tensor):
        self.A_t = A.t().contiguous()  # (in, R): x @ A_t is one GEMM shared by all candidates
        self.B_t = B.t().contiguous()  # (R, out), scalings already folded in
        self.owner = owner  # (R,) adapter index of each rank row
        self.row_weights = torch.empty(0)
        self.B_weighted = torch.empty(0)

    def update(self, W: torch.Tensor) -> None:
        K = W.shape[0]
        # Allocate only when the candidate count changes, or after a differentiable assign.
        if self.B_weighted.shape[:1] != (K,) or _assigned(self.B_weighted):
            self.row_weights = W.new_empty(K, self.owner.numel())
            self.B_weighted = W.new_empty(K, *self.B_t.shape)
        torch.index_select(W, 1, self.owner, out=self.row_weights)
        # Folding the row weights into B costs R*out per candidate, far less than scaling h.
        torch.mul(self.row_weights.unsqueeze(2), self.B_t, out=self.B_weighted)

    def assign(self, W: torch.Tensor) -> None:
        """``update`` without ``out=`` buffers, so autograd can follow ``W``."""
        self.row_weights = W.index_select(1, self.owner)
        self.B_weighted = self.row_weights.unsqueeze(2) * self.B_t

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.row_weights, self.B_weighted]

    def add(self, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(base, x @ self.A_t, self.B_weighted)


class _LorahubTerm:
    """``lorahub`` mode for one module: the factors mixed by ``w`` once per weight update."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, owner: torch.Tensor):
        n, self.r, self.d_in = A.shape
        self.d_out = B.shape[1]
        self.A_flat = A.reshape(n, -1)  # (n, r*in)
        self.B_flat = B.reshape(n, -1)  # (n, out*r), scalings already folded in
        self.owner = owner  # (n,) index of each stacked adapter in w
        self.present_weights = torch.empty(0)
        self.A_mix = torch.empty(0)
        self.B_mix = torch.empty(0)

    def update(self, W: torch.Tensor) -> None:
        K = W.shape[0]
        # Allocate only when the candidate count changes, or after a differentiable assign.
        if self.A_mix.shape[:1] != (K,) or _assigned(self.A_mix):
            self.present_weights = W.new_empty(K, self.owner.numel())
            self.A_mix = W.new_empty(K, self.r * self.d_in)
            self.B_mix = W.new_empty(K, self.d_out * self.r)
        torch.index_select(W, 1, self.owner, out=self.present_weights)
        torch.matmul(self.present_weights, self.A_flat, out=self.A_mix)
        torch.matmul(self.present_weights, self.B_flat, out=self.B_mix)

    def assign(self, W: torch.Tensor) -> None:
        """``update`` without ``out=`` buffers, so autograd can follow ``W``."""
        self.present_weights = W.index_select(1, self.owner)
        self.A_mix = self.present_weights @ self.A_flat
        self.B_mix = self.present_weights @ self.B_flat

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.present_weights, self.A_mix, self.B_mix]

    def add(self, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        K = x.shape[0]
        A = self.A_mix.view(K, self.r, self.d_in).transpose(1, 2)  # (K, in, r), a strided view
        B = self.B_mix.view(K, self.d_out, self.r).transpose(1, 2)  # (K, r, out)
        return torch.baddbmm(base, torch.bmm(x, A), B)


class InjectedLora:
    """A composite of ``n`` adapters injected into ``model``; see the module docstring.

    Use ``set_weights(w)`` (one candidate) or ``set_candidate_weights(W)`` (``K x n``), then run
    the model on a batch repeated ``K`` times (replica-major, batch-first). ``remove()`` — or
    leaving the ``with`` block — restores the original model.
    """

    def __init__(self, model: nn.Module, terms: dict[str, _DeltaTerm | _LorahubTerm], *, mode: str,
                 labels: list[str], device: torch.device):
        self.model = model
        self.mode = mode
        self.labels = labels
        self.modules = sorted(terms)
        self._terms = terms
        self._weights = torch.zeros(0, len(labels), dtype=torch.float32, device=device)
        self.set_weights(np.zeros(len(labels)))
        self._handles = [model.get_submodule(path).register_forward_hook(self._hook(term), with_kwargs=True)
                         for path, term in terms.items()]

    @property
    def num_adapters(self) -> int:
        return len(self.labels)

    @property
    def candidates(self) -> int:
        """How many weight vectors the next forward expects (its batch is repeated that often)."""
        return self._weights.shape[0]

    @property
    def weights(self) -> np.ndarray:
        """The current weights, ``K x n`` (a copy)."""
        return self._weights.cpu().numpy().astype(np.float64)

    def set_weights(self, weights) -> None:
        """Use one weight vector (length ``n``). Raises ``CompositionError`` on a wrong length."""
        self.set_candidate_weights(np.asarray(weights, dtype=np.float64).reshape(1, -1))

    def set_candidate_weights(self, weights) -> None:
        """Use ``K`` weight vectors (a ``K x n`` array); replica ``k`` of the batch uses row ``k``.

        Raises ``CompositionError`` when the shape is not ``K x n`` or a value is not finite.
        """
        W = torch.tensor(np.asarray(weights, dtype=np.float64), dtype=torch.float32)
        if W.ndim != 2 or W.shape[1] != self.num_adapters or W.shape[0] < 1:
            raise CompositionError(f"expected weights of shape (K, {self.num_adapters}), got {tuple(W.shape)}")
        if not torch.isfinite(W).all():
            raise CompositionError(f"weights must be finite numbers, got {W.tolist()}")
        # Buffers made inside inference mode could not be updated outside it later.
        with torch.inference_mode(False), torch.no_grad():
            if W.shape != self._weights.shape or _assigned(self._weights):
                self._weights = W.to(self._weights.device)
            else:
                self._weights.copy_(W)
            self._update_terms()

    def set_weight_tensors(self, weights: torch.Tensor | Mapping[str, torch.Tensor]) -> None:
        """Use weights given as torch tensors, differentiably: a loss computed by the next
        forward can be back-propagated to them (for gradient-based weight search).

        ``weights`` is one ``K x n`` tensor for every module, or a mapping from each injected
        module path (see ``modules``) to its own ``K x n`` tensor (finer weights, e.g. one per
        layer block). Tensors may live on any device; they are moved to each module's device.
        The next ``set_candidate_weights`` goes back to the fast in-place path.

        Raises ``CompositionError`` when a shape is not ``K x n`` (one ``K`` for all modules)
        or a module path is missing or unknown.
        """
        per_module = weights if isinstance(weights, Mapping) else dict.fromkeys(self.modules, weights)
        if set(per_module) != set(self.modules):
            unknown = sorted(set(per_module) ^ set(self.modules))
            raise CompositionError(f"weights must be given for exactly the injected modules; "
                                   f"check {', '.join(unknown[:3])}")
        shapes = {tuple(W.shape) for W in per_module.values()}
        (shape,) = shapes if len(shapes) == 1 else (None,)
        if shape is None or len(shape) != 2 or shape[1] != self.num_adapters or shape[0] < 1:
            raise CompositionError(f"expected weights of one shape (K, {self.num_adapters}), "
                                   f"got {sorted(shapes)}")
        for path, W in per_module.items():
            term = self._terms[path]
            term.assign(W.to(device=term.owner.device, dtype=torch.float32))
        # The hooks read K from here; the values are a summary (the first module's).
        first = per_module[self.modules[0]]
        self._weights = first.detach().to(device=self._weights.device, dtype=torch.float32).clone()

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors a weight update writes into (they keep their storage while ``K`` stays)."""
        return [self._weights] + [t for term in self._terms.values() for t in term.state_tensors()]

    def _update_terms(self) -> None:
        on_device = {self._weights.device: self._weights}
        for term in self._terms.values():
            device = term.owner.device
            if device not in on_device:
                on_device[device] = self._weights.to(device)
            term.update(on_device[device])

    def _hook(self, term):
        def add_delta(module, args, kwargs, output):
            x = args[0] if args else kwargs["input"]
            K = self._weights.shape[0]
            if x.shape[0] % K:
                raise CompositionError(f"a batch of {x.shape[0]} rows cannot hold {K} candidates; "
                                       f"repeat the examples {K} times")
            out_features = output.shape[-1]
            xs = x.reshape(K, -1, x.shape[-1]).to(torch.float32)
            base = output.reshape(K, -1, out_features).to(torch.float32)
            return term.add(base, xs).reshape(output.shape).to(output.dtype)
        return add_delta

    def remove(self) -> None:
        """Restore the model exactly as it was; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _INJECTED.get(self.model) is self:
            del _INJECTED[self.model]

    def __enter__(self) -> "InjectedLora":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def inject_composite(model: nn.Module, adapters: Sequence[LoraWeights], *, mode: str = "lorahub") -> InjectedLora:
    """Inject the composite of ``adapters`` into ``model`` with all weights zero (the base model).

    Raises ``CompositionError`` for an unknown mode, no adapters, a PEFT model or a model that
    already carries a composite; ``IncompatibleAdapters`` when an adapter targets a module the
    model lacks or with other shapes, or (``lorahub``) when shapes differ between adapters;
    ``UnsupportedAdapter`` when a target is not a linear layer.
    """
    if mode not in MODES:
        raise CompositionError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not adapters:
        raise CompositionError("no adapters to compose")
    if hasattr(model, "peft_config"):
        raise CompositionError("expected a plain transformers model, got a PEFT model; pass its base model")
    if model in _INJECTED:
        raise CompositionError("this model already carries an injected composite; remove() it first")
    labels = [adapter.label or f"adapter {i}" for i, adapter in enumerate(adapters)]
    paths = sorted({path for adapter in adapters for path in adapter.modules})
    if mode == "lorahub":
        _check_equal_shapes(adapters, labels, paths)
    terms = {path: _term(mode, model, path, adapters, labels) for path in paths}
    device = next(iter(model.parameters())).device
    injected = InjectedLora(model, terms, mode=mode, labels=labels, device=device)
    _INJECTED[model] = injected
    return injected


def _term(mode: str, model: nn.Module, path: str, adapters: Sequence[LoraWeights],
          labels: list[str]) -> _DeltaTerm | _LorahubTerm:
    layer = _linear_layer(model, path, labels, adapters)
    device = layer.weight.device  # each term lives with its layer (models split over devices)
    present = [(i, adapter.modules[path]) for i, adapter in enumerate(adapters) if path in adapter.modules]
    for i, factors in present:
        _check_fits(layer, path, factors, labels[i])
    As = [f.A.to(device=device, dtype=torch.float32) for _, f in present]
    Bs = [f.B.to(device=device, dtype=torch.float32) * f.scaling for _, f in present]
    if mode == "delta":
        owner = torch.cat([torch.full((f.rank,), i, dtype=torch.long) for i, f in present]).to(device)
        return _DeltaTerm(torch.cat(As), torch.cat(Bs, dim=1), owner)
    owner = torch.tensor([i for i, _ in present], device=device)
    return _LorahubTerm(torch.stack(As), torch.stack(Bs), owner)


def _linear_layer(model: nn.Module, path: str, labels: list[str], adapters: Sequence[LoraWeights]) -> nn.Module:
    owners = ", ".join(label for label, adapter in zip(labels, adapters) if path in adapter.modules)
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise IncompatibleAdapters(f"{owners}: module {path} is not in the model; "
                                   "was the adapter trained for another base model?", module=path) from None
    if not (isinstance(layer, nn.Linear) or type(layer).__name__ == "Conv1D"):
        raise UnsupportedAdapter(f"{owners}: module {path} is a {type(layer).__name__}; "
                                 "only linear layers can be composed", module=path)
    return layer


def _check_fits(layer: nn.Module, path: str, factors, label: str) -> None:
    # transformers' Conv1D (GPT-2) stores its weight as (in, out); nn.Linear as (out, in).
    d_in, d_out = layer.weight.shape if type(layer).__name__ == "Conv1D" else layer.weight.shape[::-1]
    r = factors.rank
    if tuple(factors.A.shape) != (r, d_in) or tuple(factors.B.shape) != (d_out, r):
        raise IncompatibleAdapters(
            f"{label}: module {path} has lora_A {tuple(factors.A.shape)} and lora_B {tuple(factors.B.shape)}, "
            f"but the model's layer maps {d_in} to {d_out} features; was it trained for another base model?",
            module=path)


def _check_equal_shapes(adapters: Sequence[LoraWeights], labels: list[str], paths: list[str]) -> None:
    for path in paths:
        present = [(label, adapter.modules[path]) for label, adapter in zip(labels, adapters)
                   if path in adapter.modules]
        (first_label, first), *rest = present
        for label, factors in rest:
            if factors.A.shape != first.A.shape or factors.B.shape != first.B.shape:
                raise IncompatibleAdapters(
                    f"lorahub mode needs equal shapes: module {path} has lora_A {tuple(first.A.shape)} in "
                    f"{first_label} but {tuple(factors.A.shape)} in {label}; use --mode delta to combine "
                    "different ranks", module=path)
