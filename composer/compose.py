"""``compose``: search weights for a pool of LoRA modules on a few examples, merge the winner
into one PEFT adapter, and (optionally) register it in the hub with its lineage."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from loramgr.hub.records import AdapterVersion, Lineage, SourceWeight

from .align import CombinedLora, check_compatible, combine
from .base_model import load_base_model
from .candidates import Candidate, candidates_from_refs
from .errors import CompositionError, ExamplesError
from .examples import Example, examples_digest, read_examples, sample_examples
from .export import export_adapter
from .injection import inject_composite
from .lora import LoraWeights, load_lora
from .objective import DEFAULT_L1, Objective, tokenize_examples
from .search import DEFAULT_OPTIMIZER, SearchResult, search_weights

MODES = ("delta", "lorahub")


@dataclass(frozen=True)
class Composition:
    """What ``compose`` found and made.

    Losses are the task loss (mean token cross-entropy on the examples, no L1 term):
    ``base_loss`` at w = 0, ``uniform_loss`` at w = 1/n each, ``loss`` at the found weights.
    """

    candidates: list[Candidate]
    weights: tuple[float, ...]
    loss: float
    objective: float
    base_loss: float
    uniform_loss: float
    mode: str
    seed: int
    examples: list[Example]
    examples_digest: str
    search: SearchResult
    combined: CombinedLora
    path: Path | None = None
    version: AdapterVersion | None = None
    details: dict = field(default_factory=dict)

    def lineage(self) -> Lineage:
        return Lineage(
            sources=[SourceWeight(c.ref or c.label, w, c.digest) for c, w in zip(self.candidates, self.weights)],
            mode=self.mode, objective="few_shot_loss", score=self.loss, seed=self.seed,
            examples_digest=self.examples_digest, details=self.details)

    def to_dict(self) -> dict:
        return {
            "modules": [{"source": c.ref or c.label, "task": c.task, "weight": w}
                        for c, w in zip(self.candidates, self.weights)],
            "loss": self.loss, "objective": self.objective, "base_loss": self.base_loss,
            "uniform_loss": self.uniform_loss, "mode": self.mode, "seed": self.seed,
            "examples": len(self.examples), "examples_digest": self.examples_digest,
            "evaluations": self.search.evaluations, "seconds": round(self.search.seconds, 3),
            "rank": self.combined.rank, "truncation_error": self.combined.truncation_error,
            "path": str(self.path) if self.path else None,
            "version": self.version.to_dict() if self.version else None,
        }


def as_examples(examples, *, shots: int | None, seed: int) -> list[Example]:
    """Examples from a JSONL path, dicts or ``Example``s; ``shots`` of them chosen by ``seed``."""
    if isinstance(examples, (str, Path)):
        examples = read_examples(examples)
    rows = [e if isinstance(e, Example) else Example(e["input"], e["output"]) for e in examples]
    if not rows:
        raise ExamplesError("no examples given")
    return rows if shots is None else sample_examples(rows, shots, seed)


def compose(model, candidates: Sequence[Candidate | str | Path], examples, *, tokenizer=None,
            shots: int | None = 5, budget: int = 40, mode: str = "delta", seed: int = 0,
            optimizer: str = DEFAULT_OPTIMIZER, l1: float = DEFAULT_L1, num_workers: int = 1,
            rank: int | None = None, output: str | Path | None = None, name: str | None = None,
            task: str | None = None, registry=None, base_model: str | None = None,
            device: str | None = None, overwrite: bool = False, screen: bool = True,
            progress: Callable[[int, float], None] | None = None) -> Composition:
    """Find weights for ``candidates`` that minimise the base model's loss on ``examples``,
    then merge them into one PEFT adapter.

    ``model``: a Hub id / folder (loaded with its tokenizer) or a loaded transformers model
    (pass ``tokenizer``). ``candidates``: ``Candidate``s, adapter folders or hub refs.
    ``examples``: a JSONL path or a list; ``shots`` of them are used (all when None).
    ``output`` writes the adapter there; ``name`` (with ``registry``) also pushes it as a
    ``composed`` version with its lineage. ``rank`` re-compresses the merged adapter.
    ``overwrite`` lets ``output`` replace an earlier adapter there. ``screen`` spends the first
    evaluations on the plain sum and on each candidate alone (see ``search_weights``).

    Raises ``CompositionError`` and its subclasses (``IncompatibleAdapters``, ``ExamplesError``,
    ``UnsupportedAdapter``) and the hub's errors for refs and names; nothing is registered then.
    """
    if mode not in MODES:
        raise CompositionError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if budget < 1:
        raise CompositionError(f"the budget must be at least 1 evaluation, got {budget}")
    if name is not None and registry is None:
        raise CompositionError("a registry is needed to register the composed adapter under a name")
    chosen = [c if isinstance(c, Candidate) else candidates_from_refs(registry, [str(c)])[0] for c in candidates]
    if not chosen:
        raise CompositionError("no candidate adapters to compose")
    examples = as_examples(examples, shots=shots, seed=seed)
    adapters: list[LoraWeights] = [load_lora(c.path, label=c.label) for c in chosen]
    check_compatible(adapters)
    if isinstance(model, (str, Path)):
        model_id = str(model)
        model, tokenizer = load_base_model(model_id, device=device)
    elif tokenizer is None:
        raise CompositionError("pass the tokenizer with a loaded model")
    base_model = base_model or adapters[0].base_model or getattr(model.config, "_name_or_path", None)

    batch = tokenize_examples(model, tokenizer, examples)
    found = search_weights(model, adapters, batch, mode=mode, budget=budget, optimizer=optimizer, seed=seed,
                           l1=l1, num_workers=num_workers, callback=progress, screen=screen)
    n = len(adapters)
    with inject_composite(model, adapters, mode=mode) as composite:
        objective = Objective(composite, batch, l1=0.0)
        base_loss, uniform_loss = (s.task_loss for s in objective.score_many(np.stack([np.zeros(n),
                                                                                       np.full(n, 1.0 / n)])))
    combined = combine(adapters, found.weights, method=mode, rank=rank, seed=seed)
    digest = examples_digest(examples)
    details = {"budget": budget, "optimizer": optimizer, "shots": shots, "examples": len(examples), "l1": l1,
               "num_workers": num_workers, "screen": screen, "rank": combined.rank, "truncation_error": combined.truncation_error}
    result = Composition(candidates=chosen, weights=found.weights, loss=found.task_loss, objective=found.loss,
                         base_loss=base_loss, uniform_loss=uniform_loss, mode=mode, seed=seed, examples=examples,
                         examples_digest=digest, search=found, combined=combined, details=details)
    if output is None and name is None:
        return result
    with tempfile.TemporaryDirectory(prefix="loramgr-compose-") as scratch:
        folder = Path(output) if output is not None else Path(scratch) / "adapter"
        task_type = adapters[0].config.get("task_type")
        card = {"name": name, "sources": [c.ref or c.label for c in chosen], "weights": list(found.weights),
                "mode": mode, "score": found.task_loss, "objective": "few_shot_loss", "seed": seed,
                "examples_digest": digest, "budget": budget, "optimizer": optimizer}
        export_adapter(combined, folder, base_model=base_model, task_type=task_type, card=card,
                       overwrite=overwrite)
        version = None
        if name is not None:
            version = registry.push(folder, name=name, task=task or "+".join(dict.fromkeys(
                c.task for c in chosen if c.task)) or "composed", base=base_model, source="composed",
                lineage=result.lineage(), description=f"composed from {n} adapters ({mode})")
    return replace(result, path=Path(output) if output is not None else None, version=version)


def load_adapter(base_model, adapter: str | Path, *, registry=None, device: str | None = None):
    """``base_model`` (a Hub id / folder, or a loaded model) with ``adapter`` (a folder, or a
    hub ref pulled through ``registry``) applied: a ``peft.PeftModel`` in eval mode.

    Raises the hub's ``AdapterNotFound`` for an unknown ref and ``CompositionError`` when the
    base model cannot be loaded.
    """
    from peft import PeftModel

    if isinstance(base_model, (str, Path)):
        base_model, _ = load_base_model(str(base_model), device=device)
    path = Path(adapter)
    if not path.is_dir():
        if registry is None:
            raise CompositionError(f"{adapter} is not a folder; pass a registry to pull it from the hub")
        path = Path(registry.pull(str(adapter)))
    return PeftModel.from_pretrained(base_model, str(path)).eval()
