"""``loramgr compose``: a new adapter from a few examples and a pool of LoRA modules.

The command only parses flags into ``ComposeOptions`` and prints; ``loramgr.composer.compose``
does the work (choosing candidates and examples included).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from . import main, registry
from .output import emit_json, json_option, print_table, quiet_libraries

# Light modules (no torch): the flags' choices and defaults come from the library itself.
from loramgr.composer.choices import (DEFAULT_BUDGETS, DEFAULT_OPTIMIZER, DEFAULT_SCREEN_TOP, DEFAULT_SEARCH,
                                      GRANULARITIES, MODES, PROMPT_FORMATS, SEARCHES)
from loramgr.composer.options import ComposeOptions

_DEFAULTS = ComposeOptions().to_dict()


@contextmanager
def search_progress(budget: int, *, quiet: bool):
    """A bar of evaluations with the best loss so far, on a terminal only."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=budget, desc="compose", unit="eval", file=sys.stderr, leave=False) as bar:
        def update(done: int, best: float) -> None:
            if done > bar.total:  # the screen's forwards come on top of a gradient search's steps
                bar.total = done
            bar.update(done - bar.n)
            bar.set_postfix(best_loss=f"{best:.4f}")
        yield update


@main.command()
@click.option("--tasks", help="Comma-separated tasks: their adapters' latest versions are the candidates.")
@click.option("--adapters", "refs", multiple=True, metavar="REF|DIR",
              help="A candidate named directly (repeatable), instead of --tasks.")
@click.option("--all", "all_adapters", is_flag=True,
              help="Every adapter of the base model in the hub is a candidate: each is scored alone on the "
                   "examples and the best --shortlist go to the search (needs --examples and --base).")
@click.option("--shortlist", type=click.IntRange(min=1), default=_DEFAULTS["shortlist"], show_default=True,
              help="With --all: how many modules the search gets.")
@click.option("--base", help="Base model id the candidates must share (needed when tasks span several).")
@click.option("--model", help="Base model to score with: a local folder or a Hub id (default: the base id).")
@click.option("--examples", type=click.Path(dir_okay=False),
              help="JSON Lines few-shot examples; default: the example sets registered with the tasks.")
@click.option("--shots", type=click.IntRange(min=1), default=_DEFAULTS["shots"], show_default=True,
              help="How many examples to use (per task when they come from the registry).")
@click.option("--prompt-format", type=click.Choice(PROMPT_FORMATS), default=_DEFAULTS["prompt_format"],
              show_default=True, help="How a causal LM is shown each input: plain text, or the tokenizer's chat "
                                      "template (use the format the modules were trained with).")
@click.option("--budget", type=click.IntRange(min=1),
              help="Descent steps (gradient; default {gradient}) or candidate weight vectors to score "
                   "(nevergrad; default {nevergrad}).".format(**DEFAULT_BUDGETS))
@click.option("--search", "search_kind", type=click.Choice(SEARCHES),
              help=f"gradient: Adam on the weights, one forward+backward per step; nevergrad: gradient-free, as "
                   f"LoraHub (the default when --optimizer is given).  [default: {DEFAULT_SEARCH}]")
@click.option("--granularity", type=click.Choice(GRANULARITIES),
              help="With --search gradient: one weight per module and layer block (the default), or per module.")
@click.option("--mode", type=click.Choice(MODES), default=_DEFAULTS["mode"], show_default=True,
              help="delta: exact weighted sum of updates (any ranks); lorahub: factor-wise mix (equal shapes).")
@click.option("--rank", "--max-rank", "rank", type=click.IntRange(min=1),
              help="Re-compress the result to at most this rank (SVD from the factors), e.g. to fit a "
                   "serving stack's max LoRA rank; the truncation error is reported.")
@click.option("--seed", type=click.IntRange(min=0), default=_DEFAULTS["seed"], show_default=True,
              help="Seeds the example choice and the search.")
@click.option("--optimizer", help="A nevergrad optimizer name (implies --search nevergrad).  "
                                   f"[default: {DEFAULT_OPTIMIZER}]")
@click.option("--workers", type=click.IntRange(min=1), default=_DEFAULTS["workers"], show_default=True,
              help="Candidates scored per batched forward.")
@click.option("--l1", type=click.FloatRange(min=0), default=_DEFAULTS["l1"], show_default=True,
              help="Weight of LoraHub's L1 term, l1 * mean|w|.")
@click.option("--screen/--no-screen", default=_DEFAULTS["screen"], show_default=True,
              help="Spend the first evaluations on the plain sum and on each candidate alone, then search on "
                   "from the best (--no-screen: LoraHub's plain start from w = 0).")
@click.option("--screen-top", type=click.IntRange(min=0), metavar="K",
              help="Gradient search, delta mode: the screen scores alone only the K candidates whose loss falls "
                   "fastest from w = 0 (one forward and backward ranks them all); 0 scores every candidate alone, "
                   f"as the nevergrad search and lorahub mode do.  [default: {DEFAULT_SCREEN_TOP}]")
@click.option("--shots-per-step", type=click.IntRange(min=1), metavar="K",
              help="Gradient search: back-propagate K examples per step, in turn (a step costs about K/shots of "
                   "one on all), and score every example once per pass over them.  [default: all]")
@click.option("--patience", type=click.IntRange(min=0), default=_DEFAULTS["patience"], show_default=True,
              help="Stop after this many steps or evaluations without a better loss; 0 spends the whole budget.")
@click.option("--name", metavar="NS/NAME", help="Register the result in the hub as a composed version.")
@click.option("--task", help="The task of the registered result (default: the tasks' names when the examples "
                             "are theirs, else 'composed').")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write the adapter folder here.")
@click.option("--report", type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Write a self-contained HTML page: the weights as a bar chart and the search's loss curve.")
@click.option("--device", help="torch device (default: cuda when available, else cpu).")
@json_option
@click.pass_context
def compose(ctx, tasks, refs, all_adapters, shortlist, base, model, examples, shots, prompt_format, budget,
            search_kind, granularity, mode, rank, seed, optimizer, workers, l1, screen, screen_top, shots_per_step,
            patience, name, task, output, report, device, as_json):
    """Compose a new LoRA adapter from existing ones, LoraHub-style.

    Fits weights for a combination of the candidate modules to the base model's loss on a few
    examples (by default a gradient on one weight per module and layer block, with early
    stopping; or gradient-free search with nevergrad, as LoraHub), then merges the best into
    ONE ordinary PEFT adapter.

    \b
    Examples:
      loramgr compose --tasks reverse,upper --shots 5 --name lab/rev-up
      loramgr compose --adapters acme/a --adapters acme/b --examples few.jsonl -o out/ab
      loramgr compose --all --base org/base --examples few.jsonl --name acme/new --task new
      loramgr compose --tasks a,b --optimizer NGOpt --no-screen --mode lorahub   # LoraHub's procedure
    """
    from loramgr.composer.compose import REGISTERED, compose as run_compose

    if sum([bool(tasks), bool(refs), all_adapters]) != 1:
        raise click.UsageError("pass one of --tasks a,b, --adapters REF (repeatable) or --all")
    if examples is None and not tasks:
        raise click.UsageError("--examples is needed with --adapters and --all")
    options = ComposeOptions(shots=shots, budget=budget, mode=mode, search=search_kind, optimizer=optimizer,
                             workers=workers, granularity=granularity, l1=l1, screen=screen, screen_top=screen_top,
                             shots_per_step=shots_per_step, patience=patience, rank=rank, seed=seed,
                             prompt_format=prompt_format, shortlist=shortlist)
    quiet_libraries()
    hub = registry(ctx)
    with search_progress(options.budget, quiet=as_json) as progress:
        result = run_compose(model, examples=examples or REGISTERED, options=options, registry=hub,
                             tasks=tasks.split(",") if tasks else None, adapters=list(refs) or None,
                             all_adapters=all_adapters, base=base, name=name, task=task, output=output,
                             device=device, progress=progress)
    if report:
        from loramgr.hub.report import write_composition_report

        version = result.version.to_dict() if result.version else {
            "ref": "(not registered)", "base_model": base or "", "task": task or "", "lineage": result.lineage().to_dict()}
        write_composition_report(version, report)
    if as_json:
        emit_json(result.to_dict() | ({"report": report} if report else {}))
        return
    if result.shortlist:
        click.echo(f"shortlist: the {len(result.shortlist)} best of the hub's adapters alone")
        print_table([[source, f"{loss:.4f}"] for source, loss in result.shortlist], ["module", "loss alone"])
        click.echo("")
    print_table([[c.ref or c.label, c.task or "", f"{w:+.4f}"] for c, w in zip(result.candidates, result.weights)],
                ["module", "task", "weight"])
    click.echo(f"\nloss on {len(result.examples)} examples: base {result.base_loss:.4f}, "
               f"uniform average {result.uniform_loss:.4f}, composed {result.loss:.4f} "
               f"({result.search.evaluations} evaluations, {result.search.seconds:.1f} s)")
    if result.combined.truncation_error is not None:
        click.echo(f"re-compressed to rank {result.combined.rank}: relative error {result.combined.truncation_error:.2e}")
    if output:
        click.echo(f"wrote {output}")
    if report:
        click.echo(f"report written to {report}")
    if result.version:
        click.echo(f"registered {result.version.ref}")
    if not output and not result.version:
        click.echo("nothing written: pass -o DIR or --name NS/NAME to keep the adapter", err=True)
