"""``loramgr compose``: a new adapter from a few examples and a pool of LoRA modules."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from . import main, registry
from .output import emit_json, json_option, print_table, quiet_libraries


@contextmanager
def search_progress(budget: int, *, quiet: bool):
    """A bar of evaluations with the best loss so far, on a terminal only."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=budget, desc="compose", unit="eval", file=sys.stderr, leave=False) as bar:
        def update(done: int, best: float) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(best_loss=f"{best:.4f}")
        yield update


@main.command()
@click.option("--tasks", help="Comma-separated tasks: their adapters' latest versions are the candidates.")
@click.option("--adapters", "refs", multiple=True, metavar="REF|DIR",
              help="A candidate named directly (repeatable), instead of --tasks.")
@click.option("--base", help="Base model id the candidates must share (needed when tasks span several).")
@click.option("--model", help="Base model to score with: a local folder or a Hub id (default: the base id).")
@click.option("--examples", type=click.Path(dir_okay=False),
              help="JSON Lines few-shot examples; default: the example sets registered with the tasks.")
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many examples to use (per task when they come from the registry).")
@click.option("--budget", type=int, default=40, show_default=True, help="Candidate weight vectors to score.")
@click.option("--mode", type=click.Choice(["delta", "lorahub"]), default="delta", show_default=True,
              help="delta: exact weighted sum of updates (any ranks); lorahub: factor-wise mix (equal shapes).")
@click.option("--rank", "--max-rank", "rank", type=click.IntRange(min=1),
              help="Re-compress the result to at most this rank (SVD from the factors), e.g. to fit a "
                   "serving stack's max LoRA rank; the truncation error is reported.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the example choice and the search.")
@click.option("--optimizer", default="NGOpt", show_default=True, help="A nevergrad optimizer name.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Candidates scored per batched forward.")
@click.option("--l1", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Weight of LoraHub's L1 term, l1 * mean|w|.")
@click.option("--screen/--no-screen", default=True, show_default=True,
              help="Spend the first evaluations on the plain sum and on each candidate alone, then search on "
                   "from the best (--no-screen: LoraHub's plain start from w = 0).")
@click.option("--name", metavar="NS/NAME", help="Register the result in the hub as a composed version.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write the adapter folder here.")
@click.option("--device", help="torch device (default: cuda when available, else cpu).")
@json_option
@click.pass_context
def compose(ctx, tasks, refs, base, model, examples, shots, budget, mode, rank, seed, optimizer, workers, l1,
            screen, name, output, device, as_json):
    """Compose a new LoRA adapter from existing ones, LoraHub-style.

    Scores weighted combinations of the candidate modules by the base model's loss on a few
    examples (gradient-free search with nevergrad), then merges the best into ONE ordinary
    PEFT adapter.

    \b
    Examples:
      loramgr compose --tasks reverse,upper --shots 5 --name lab/rev-up
      loramgr compose --adapters acme/a --adapters acme/b --examples few.jsonl -o out/ab
    """
    from loramgr.composer.candidates import candidates_for_tasks, candidates_from_refs, registered_examples
    from loramgr.composer.compose import compose as run_compose

    if bool(tasks) == bool(refs):
        raise click.UsageError("pass either --tasks a,b or --adapters REF (repeatable)")
    quiet_libraries()
    hub = registry(ctx)
    if tasks:
        candidates = candidates_for_tasks(hub, tasks.split(","), base=base)
    else:
        candidates = candidates_from_refs(hub, refs)
    if examples is None:
        if not tasks:
            raise click.UsageError("--examples is needed with --adapters")
        chosen, used_shots = registered_examples(hub, candidates, shots=shots, seed=seed), None
    else:
        chosen, used_shots = examples, shots
    model = model or base or candidates[0].base_model
    with search_progress(budget, quiet=as_json) as progress:
        result = run_compose(model, candidates, chosen, shots=used_shots, budget=budget, mode=mode, seed=seed,
                             optimizer=optimizer, l1=l1, num_workers=workers, rank=rank, output=output,
                             name=name, registry=hub, device=device, screen=screen, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    print_table([[c.ref or c.label, c.task or "", f"{w:+.4f}"] for c, w in zip(result.candidates, result.weights)],
                ["module", "task", "weight"])
    click.echo(f"\nloss on {len(result.examples)} examples: base {result.base_loss:.4f}, "
               f"uniform average {result.uniform_loss:.4f}, composed {result.loss:.4f} "
               f"({result.search.evaluations} evaluations, {result.search.seconds:.1f} s)")
    if result.combined.truncation_error is not None:
        click.echo(f"re-compressed to rank {result.combined.rank}: relative error {result.combined.truncation_error:.2e}")
    if output:
        click.echo(f"wrote {output}")
    if result.version:
        click.echo(f"registered {result.version.ref}")
    if not output and not result.version:
        click.echo("nothing written: pass -o DIR or --name NS/NAME to keep the adapter", err=True)
