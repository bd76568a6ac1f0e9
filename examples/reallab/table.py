"""LoraHub's table on the real model: every method on every held-out target, over seeds of shot choice.

Methods (each evaluated on the target's unseen test examples, exact match of the greedy answer
and, for multiple-choice targets, option accuracy):

- ``zero-shot``: the base model alone;
- ``in-context``: the 5 shots in the prompt, no adapter;
- ``uniform``: the plain average of all modules (w = 1/n);
- ``best single``: the one module with the lowest loss on the 5 shots;
- ``lorahub``: LoraHub's own procedure (factor-wise ``lorahub`` mode, NGOpt, budget 40, start at
  w = 0, bounds [-1.5, 1.5], L1 0.05), run by loramgr;
- ``loramgr``: ``compose`` at its defaults (and any extra configurations asked for);
- ``oracle``: a LoRA trained on the target's own training split.

Adapters are exported as PEFT folders and merged into a copy of the base model with PEFT's
``merge_and_unload`` before evaluation: what a user would deploy.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from loramgr.composer.align import combine
from loramgr.composer.candidates import Candidate
from loramgr.composer.compose import compose
from loramgr.composer.export import export_adapter
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import tokenize_examples
from loramgr.composer.options import ComposeOptions
from loramgr.composer.shortlist import shortlist

from .build import RealLab, load_base
from .evaluate import exact_match, option_accuracy
from .sources import BASE_ID
from .tasks import sample_shots
from .train import fast_matmuls

SHOTS = 5
LORAHUB = ComposeOptions(mode="lorahub", optimizer="NGOpt", budget=40, screen=False, workers=1, l1=0.05)
Say = Callable[[str], None]


@dataclass
class Row:
    """One method on one target and seed."""

    target: str
    method: str
    seed: int | None
    exact_match: float
    option_accuracy: float | None
    seconds: float | None = None  # compose / search time, where there is one
    detail: str = ""


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def targets(self) -> list[str]:
        return list(dict.fromkeys(r.target for r in self.rows))

    def mean(self, method: str, target: str | None = None, metric: str = "exact_match") -> float | None:
        values = [getattr(r, metric) for r in self.rows if r.method == method and (target is None or r.target == target)
                  and getattr(r, metric) is not None]
        if not values:
            return None
        if target is None:  # the mean over targets of each target's mean over seeds
            per_target = [self.mean(method, t, metric) for t in self.targets()]
            per_target = [v for v in per_target if v is not None]
            return statistics.fmean(per_target) if per_target else None
        return statistics.fmean(values)

    def covers_all_targets(self, method: str) -> bool:
        """Whether ``method`` has a row on every target of the table (else its mean is over fewer)."""
        return {r.target for r in self.rows if r.method == method} == set(self.targets())

    def median_seconds(self, method: str) -> float | None:
        values = [r.seconds for r in self.rows if r.method == method and r.seconds is not None]
        return statistics.median(values) if values else None

    def to_dict(self) -> dict:
        return {"rows": [vars(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: dict) -> "Table":
        return cls(rows=[Row(**row) for row in data["rows"]])


def merged_copy(base_model, folder: Path):
    """A copy of ``base_model`` with the PEFT adapter in ``folder`` merged in: what a user deploys."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base_model), str(folder)).merge_and_unload().eval()


def evaluate(model, tokenizer, lab: RealLab, target: str, *, shots=()) -> tuple[float, float | None]:
    """(exact match, option accuracy) of ``model`` on ``target``'s unseen test examples."""
    test = lab.splits[target].test
    fmt = lab.config.prompt_format
    with fast_matmuls(next(model.parameters()).device):
        em = exact_match(model, tokenizer, test, prompt_format=fmt, shots=shots)
        acc = option_accuracy(model, tokenizer, test, prompt_format=fmt, shots=shots)
    return em, acc


def export_weights(adapters, weights, folder: Path, mode: str = "delta", module_weights=None) -> Path:
    """``adapters`` combined with ``weights`` (or per-module ``module_weights``), exported to ``folder``."""
    combined = combine(adapters, weights, method=mode, module_weights=module_weights)
    export_adapter(combined, folder, base_model=BASE_ID, task_type="CAUSAL_LM")
    return folder


def run_table(lab: RealLab, *, seeds: Sequence[int] = (0, 1, 2), targets: Sequence[str] | None = None,
              configurations: dict[str, ComposeOptions] | None = None, device: str | None = None,
              say: Say = lambda _m: None, after_target: Callable[[Table], None] | None = None,
              baselines: bool = True) -> Table:
    """Every method on every target of ``lab`` (or ``targets``), shots drawn by each of ``seeds``.

    ``configurations`` are loramgr's compose settings to compare, by row name (default: one row,
    ``loramgr default``, with ``ComposeOptions(prompt_format=<the lab's>)``). ``baselines=False``
    runs only those rows (no zero-shot, in-context, uniform, best single, LoraHub or oracle):
    to add a configuration to a table measured before, on the same lab and seeds.
    """
    model, tokenizer = load_base(lab.base_dir, device)
    fmt = lab.config.prompt_format
    configurations = configurations or {"loramgr default": ComposeOptions(prompt_format=fmt)}
    candidates = [Candidate(label=t, path=lab.module_dir(t), task=t) for t in lab.config.upstream]
    adapters = [load_lora(c.path, label=c.label) for c in candidates]
    table = Table()
    for target in lab.config.targets if targets is None else targets:
        split = lab.splits[target]
        if baselines:
            say(f"{target}: scoring zero-shot, the uniform average and the oracle")
            em, acc = evaluate(model, tokenizer, lab, target)
            table.rows.append(Row(target, "zero-shot", None, em, acc))
            with tempfile.TemporaryDirectory(prefix="loramgr-table-") as scratch:
                uniform = merged_copy(model, export_weights(adapters, [1.0 / len(adapters)] * len(adapters),
                                                            Path(scratch) / "u"))
                table.rows.append(Row(target, "uniform", None, *evaluate(uniform, tokenizer, lab, target)))
                del uniform
            oracle = merged_copy(model, lab.oracle_dir(target))
            table.rows.append(Row(target, "oracle", None, *evaluate(oracle, tokenizer, lab, target)))
            del oracle
        single_cache: dict[str, tuple[float, float | None]] = {}
        for seed in seeds:
            shots = sample_shots(split.shots, SHOTS, seed)
            pairs = [{"input": s.input, "output": s.output} for s in shots]
            searches = dict(configurations)
            if baselines:
                say(f"{target} seed {seed}: scoring in-context and the best single module")
                table.rows.append(Row(target, "in-context", seed,
                                      *evaluate(model, tokenizer, lab, target, shots=shots)))
                started = time.perf_counter()
                batch = tokenize_examples(model, tokenizer, [_example(p) for p in pairs], prompt_format=fmt)
                (best, loss), = shortlist(model, batch, candidates, k=1)
                picked = time.perf_counter() - started
                if best.label not in single_cache:
                    single_cache[best.label] = evaluate(merged_copy(model, best.path), tokenizer, lab, target)
                table.rows.append(Row(target, "best single", seed, *single_cache[best.label], seconds=picked,
                                      detail=best.label))
                searches = {"lorahub": LORAHUB, **searches}
            for method, options in searches.items():
                table.rows.append(_composed_row(model, tokenizer, lab, target, seed, method,
                                                _with(options, seed, fmt), candidates, pairs, say))
            say(_seed_line(table, target, seed))
        if after_target is not None:
            after_target(table)
    return table


def _composed_row(model, tokenizer, lab: RealLab, target: str, seed: int, method: str, options: ComposeOptions,
                  candidates, pairs, say: Say) -> Row:
    """``compose`` with ``options`` on the shots ``pairs``, exported, merged and evaluated."""
    unit = "steps" if options.search == "gradient" else "evaluations"
    say(f"{target} seed {seed}: {method}: searching {options.budget} {unit} over {len(candidates)} modules")
    result = compose(model, candidates, pairs, tokenizer=tokenizer, options=options, base_model=BASE_ID)
    with tempfile.TemporaryDirectory(prefix="loramgr-table-") as scratch:
        export_adapter(result.combined, Path(scratch) / "c", base_model=BASE_ID, task_type="CAUSAL_LM")
        merged = merged_copy(model, Path(scratch) / "c")
        scores = evaluate(merged, tokenizer, lab, target)
        del merged
    return Row(target, method, seed, *scores, seconds=result.search.seconds,
               detail=f"loss {result.loss:.4f} (base {result.base_loss:.4f}), {result.search.evaluations} evaluations"
                      + (", stopped early" if result.search.stopped_early else ""))


def _seed_line(table: Table, target: str, seed: int) -> str:
    return f"{target} seed {seed}: " + ", ".join(
        f"{r.method} {r.exact_match:.2f}" for r in table.rows if r.target == target and r.seed == seed)


def _example(row: dict):
    from loramgr.composer.examples import Example

    return Example(row["input"], row["output"])


def _with(options: ComposeOptions, seed: int, prompt_format: str) -> ComposeOptions:
    from dataclasses import replace

    return replace(options, seed=seed, shots=None, prompt_format=prompt_format)


def format_table(table: Table) -> str:
    """The table as text: exact match per target and mean (option accuracy in brackets), and the
    median search time of each method. A mean over fewer targets than the table has is starred:
    it is not comparable with the others."""
    targets = table.targets()
    short = [t.split("/")[0][:12] for t in targets]
    lines = [f"{'method':<22}" + "".join(f"{s:>14}" for s in short) + f"{'mean':>15}{'search s':>10}"]
    partial = False
    for method in table.methods():
        cells = []
        for target in targets + [None]:
            em = table.mean(method, target)
            acc = table.mean(method, target, "option_accuracy")
            cells.append("-" if em is None else f"{em:.2f}" + (f" ({acc:.2f})" if acc is not None else ""))
        star = "" if table.covers_all_targets(method) else "*"
        partial = partial or bool(star)
        seconds = table.median_seconds(method)
        lines.append(f"{method:<22}" + "".join(f"{c:>14}" for c in cells[:-1]) + f"{cells[-1] + star:>15}" +
                     (f"{seconds:>10.1f}" if seconds is not None else f"{'':>10}"))
    if partial:
        lines.append("* mean over only the targets this method ran on")
    return "\n".join(lines)
