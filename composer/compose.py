"""``compose``: search weights for a pool of LoRA modules on a few examples, merge the winner
into one PEFT adapter, and (optionally) register it in the hub with its lineage.

This is the whole job the CLI's ``loramgr compose`` does: choosing the candidates (named
adapters, every adapter of some tasks, or the whole hub shortlisted), choosing the examples
(a file, a list, or the example sets registered with the tasks), the search and the export.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from loramgr.hub.records import AdapterVersion, Lineage, SourceWeight

from .align import CombinedLora, check_compatible, combine
from .base_model import load_base_model
from .candidates import Candidate, candidates_for_tasks, candidates_from_refs, registered_examples
from .errors import CompositionError, ExamplesError
from .examples import Example, examples_digest, read_examples, sample_examples
from .export import export_adapter
from .gradient import search_weights_gradient
from .injection import inject_composite
from .lora import LoraWeights, load_lora
from .objective import Objective, tokenize_examples
from .options import MODES, ComposeOptions
from .prompts import check_prompt_format
from .search import SearchResult, search_weights
from .shortlist import hub_pool, shortlist

REGISTERED = "registered"  # examples=...: draw them from the example sets registered with the tasks
_LEGACY_NAMES = {"num_workers": "workers"}

__all__ = ["MODES", "REGISTERED", "Composition", "ComposeOptions", "compose", "compose_again", "load_adapter"]


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
    options: ComposeOptions = ComposeOptions()
    shortlist: list[tuple[str, float]] | None = None
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
            "stopped_early": self.search.stopped_early, "options": self.options.to_dict(),
            "shortlist": [{"source": s, "loss": loss} for s, loss in self.shortlist] if self.shortlist else None,
            "rank": self.combined.rank, "truncation_error": self.combined.truncation_error,
            "path": str(self.path) if self.path else None,
            "version": self.version.to_dict() if self.version else None,
        }


def resolve_options(options: ComposeOptions | None, settings: dict) -> ComposeOptions:
    """``options`` with ``settings`` (the same names as keywords) applied on top.

    Raises ``CompositionError`` for an unknown setting, naming the known ones.
    """
    settings = {_LEGACY_NAMES.get(k, k): v for k, v in settings.items()}
    unknown = sorted(set(settings) - set(ComposeOptions.names()))
    if unknown:
        raise CompositionError(f"unknown compose setting {', '.join(unknown)}; known: {', '.join(ComposeOptions.names())}")
    base = options or ComposeOptions()
    return replace(base, **settings) if settings else base


def as_examples(examples, *, shots: int | None, seed: int) -> list[Example]:
    """Examples from a JSONL path, dicts or ``Example``s; ``shots`` of them chosen by ``seed``."""
    if isinstance(examples, (str, Path)):
        examples = read_examples(examples)
    rows = [e if isinstance(e, Example) else Example(e["input"], e["output"]) for e in examples]
    if not rows:
        raise ExamplesError("no examples given")
    return rows if shots is None else sample_examples(rows, shots, seed)


def compose(model=None, candidates: Sequence[Candidate | str | Path] | None = None, examples=REGISTERED, *,
            tasks: Sequence[str] | None = None, adapters: Sequence[str | Path] | None = None,
            all_adapters: bool = False, base: str | None = None, options: ComposeOptions | None = None,
            tokenizer=None, registry=None, name: str | None = None, task: str | None = None,
            output: str | Path | None = None, overwrite: bool = False, device: str | None = None,
            base_model: str | None = None, progress: Callable[[int, float], None] | None = None,
            **settings) -> Composition:
    """Find weights for a pool of LoRA modules that minimise the base model's loss on a few
    examples, then merge them into one PEFT adapter.

    The pool is one of: ``candidates`` (``Candidate``s, folders or hub refs), ``adapters``
    (folders or refs), ``tasks`` (the latest adapter of each task in the hub, on ``base``), or
    ``all_adapters`` (every adapter of ``base`` in the hub, shortlisted to the
    ``options.shortlist`` best alone). ``examples`` is a JSONL path, a list, or ``"registered"``
    (``shots`` per task from the example sets registered with ``tasks``). ``model``: a Hub id /
    folder (default: ``base``, then the candidates' base model), or a loaded model with its
    ``tokenizer``. ``options`` (or the same names as keywords, e.g. ``budget=40``) set the search;
    see ``ComposeOptions``. ``output`` writes the adapter there (``overwrite`` lets it replace an
    earlier one); ``name`` also registers it as a ``composed`` version for ``task`` with its
    lineage, which records everything needed to run the composition again (``compose_again``).

    Raises ``CompositionError`` and its subclasses (``IncompatibleAdapters``, ``ExamplesError``,
    ``UnsupportedAdapter``) and the hub's errors for refs and names; nothing is registered then.
    """
    options = resolve_options(options, settings)
    if name is not None and registry is None:
        raise CompositionError("a registry is needed to register the composed adapter under a name")
    chosen, pool = _candidates(registry, candidates, tasks, adapters, all_adapters, base)
    examples, examples_source = _examples(registry, examples, chosen, options)
    if isinstance(model, (str, Path)) or model is None:
        model_id = str(model or base or (chosen[0].base_model if chosen else None) or "")
        if not model_id:
            raise CompositionError("no base model to score with: pass --model (or --base)")
        model, tokenizer = load_base_model(model_id, device=device)
    elif tokenizer is None:
        raise CompositionError("pass the tokenizer with a loaded model")
    check_prompt_format(options.prompt_format, tokenizer)
    batch = tokenize_examples(model, tokenizer, examples, prompt_format=options.prompt_format)
    shortlisted = None
    if pool is not None:
        ranked = shortlist(model, batch, pool, k=options.shortlist, per_forward=max(options.workers, 8))
        chosen = [candidate for candidate, _ in ranked]
        shortlisted = [(c.ref or c.label, loss) for c, loss in ranked]
    adapters_: list[LoraWeights] = [load_lora(c.path, label=c.label) for c in chosen]
    check_compatible(adapters_)
    base_model = base_model or adapters_[0].base_model or getattr(model.config, "_name_or_path", None)
    found = _search(model, adapters_, batch, options, progress)
    n = len(adapters_)
    with inject_composite(model, adapters_, mode=options.mode) as composite:
        scores = Objective(composite, batch, l1=0.0).score_many(np.stack([np.zeros(n), np.full(n, 1.0 / n)]))
        base_loss, uniform_loss = (s.task_loss for s in scores)
    combined = combine(adapters_, found.weights, method=options.mode, rank=options.rank, seed=options.seed,
                       module_weights=found.module_weights)
    digest = examples_digest(examples)
    details = {
        "options": options.to_dict(), "shots": len(examples), "examples_source": examples_source,
        "examples": [{"input": e.input, "output": e.output} for e in examples],
        "evaluations": found.evaluations, "seconds": round(found.seconds, 3), "optimizer": found.optimizer,
        "stopped_early": found.stopped_early, "base_loss": base_loss, "uniform_loss": uniform_loss,
        "rank": combined.rank, "truncation_error": combined.truncation_error, "history": _history(found),
    }
    if found.block_weights:
        details["block_weights"] = {block: list(w) for block, w in found.block_weights.items()}
    if shortlisted:
        details["shortlist"] = [{"source": s, "loss": loss} for s, loss in shortlisted]
    result = Composition(candidates=chosen, weights=found.weights, loss=found.task_loss, objective=found.loss,
                         base_loss=base_loss, uniform_loss=uniform_loss, mode=options.mode, seed=options.seed,
                         examples=examples, examples_digest=digest, search=found, combined=combined,
                         options=options, shortlist=shortlisted, details=details)
    if output is None and name is None:
        return result
    with tempfile.TemporaryDirectory(prefix="loramgr-compose-") as scratch:
        folder = Path(output) if output is not None else Path(scratch) / "adapter"
        card = {"name": name, "sources": [c.ref or c.label for c in chosen], "weights": list(found.weights),
                "mode": options.mode, "score": found.task_loss, "objective": "few_shot_loss", "seed": options.seed,
                "examples_digest": digest, "budget": options.budget, "optimizer": found.optimizer,
                "prompt_format": options.prompt_format}
        export_adapter(combined, folder, base_model=base_model, task_type=adapters_[0].config.get("task_type"),
                       card=card, overwrite=overwrite)
        version = None
        if name is not None:
            version = registry.push(folder, name=name, task=task or _default_task(chosen, examples_source),
                                    base=base_model, source="composed", lineage=result.lineage(),
                                    description=f"composed from {n} adapters ({options.mode})")
    return replace(result, path=Path(output) if output is not None else None, version=version)


def compose_again(registry, ref: str, *, model=None, tokenizer=None, device: str | None = None,
                  **kwargs) -> Composition:
    """Run the composition recorded in the lineage of ``ref`` again: the same sources, examples
    and options (``kwargs`` go to ``compose``: ``output``, ``name``...).

    Raises ``CompositionError`` when ``ref`` is not a composed version with a full lineage.
    """
    version = registry.show(ref)
    lineage = version.lineage
    details = (lineage.details or {}) if lineage else {}
    if lineage is None or "options" not in details or "examples" not in details:
        raise CompositionError(f"{version.ref} has no lineage to compose from again "
                               "(it was not composed by this version of loramgr)")
    options = replace(ComposeOptions.from_dict(details["options"]), shots=None)
    return compose(model, [s.ref for s in lineage.sources], details["examples"], options=options,
                   registry=registry, tokenizer=tokenizer, device=device, base_model=version.base_model, **kwargs)


def _candidates(registry, candidates, tasks, adapters, all_adapters: bool, base: str | None):
    """(named candidates, streamed pool or None): exactly one way of naming the pool."""
    given = [candidates is not None, tasks is not None, adapters is not None, bool(all_adapters)]
    if sum(given) != 1:
        raise CompositionError("name the candidate modules one way: candidates, tasks, adapters or all adapters")
    if all_adapters:
        if registry is None:
            raise CompositionError("a registry is needed to compose from every adapter in the hub")
        return [], hub_pool(registry, base=base)
    if tasks is not None:
        return candidates_for_tasks(registry, list(tasks), base=base), None
    named = list(candidates if candidates is not None else adapters)
    chosen = [c if isinstance(c, Candidate) else candidates_from_refs(registry, [str(c)])[0] for c in named]
    if not chosen:
        raise CompositionError("no candidate adapters to compose")
    return chosen, None


def _examples(registry, examples, chosen: list[Candidate], options: ComposeOptions) -> tuple[list[Example], str]:
    """(the examples to score on, where they came from)."""
    if isinstance(examples, str) and examples == REGISTERED:
        if registry is None or not chosen or not all(c.ref and c.task for c in chosen):
            raise ExamplesError("registered examples need candidates chosen by task from the hub: pass --examples "
                                "FILE.jsonl")
        rows, formats = registered_examples(registry, chosen, shots=options.shots or 5, seed=options.seed)
        other = sorted(f for f in formats if f != options.prompt_format)
        if other:
            raise ExamplesError(f"the examples registered with these tasks were written for prompt format "
                                f"{other[0]!r}, not {options.prompt_format!r}: pass --prompt-format {other[0]}")
        return rows, REGISTERED
    source = f"file:{Path(examples).name}" if isinstance(examples, (str, Path)) else "given"
    return as_examples(examples, shots=options.shots, seed=options.seed), source


def _search(model, adapters: list[LoraWeights], batch, options: ComposeOptions, progress) -> SearchResult:
    common = dict(mode=options.mode, budget=options.budget, seed=options.seed, l1=options.l1, bounds=options.bounds,
                  screen=options.screen, patience=options.stop_after, callback=progress)
    if options.search == "gradient":
        return search_weights_gradient(model, adapters, batch, granularity=options.granularity,
                                       learning_rate=options.learning_rate, screen_top=options.screen_top,
                                       shots_per_step=options.shots_per_step, **common)
    return search_weights(model, adapters, batch, optimizer=options.optimizer, num_workers=options.workers, **common)


def _history(found: SearchResult) -> list[dict]:
    """Each evaluation's objective, task loss and the best objective so far (for pictures)."""
    best, rows = float("inf"), []
    for evaluation in found.history:
        best = min(best, evaluation.loss)
        rows.append({"loss": evaluation.loss, "task_loss": evaluation.task_loss, "best": best})
    return rows


def _default_task(chosen: list[Candidate], examples_source: str) -> str:
    # The sources' tasks describe the result only when the examples came from those tasks.
    if examples_source == REGISTERED:
        return "+".join(dict.fromkeys(c.task for c in chosen if c.task)) or "composed"
    return "composed"


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
