"""``loramgr merge``: one adapter from several, with weights you already know."""

from __future__ import annotations

import click

from . import main, registry
from .output import emit_json, json_option, print_table, quiet_libraries

# The names in composer.methods (a test keeps them equal); listed here so `loramgr --help`
# does not import torch.
METHODS = ("linear", "delta", "ties", "dare", "dare_ties", "lorahub")


def parse_weights(ctx, param, value: str) -> list[float]:
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers, e.g. 0.5,0.3,0.2") from None


@main.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF|DIR...")
@click.option("--weights", required=True, callback=parse_weights, metavar="W,W,...",
              help="One weight per adapter, in order, e.g. 0.5,0.3,0.2.")
@click.option("--method", type=click.Choice(METHODS), default="linear", show_default=True,
              help="linear/delta: exact weighted sum of the updates (kept factored); ties: magnitude trim + sign "
                   "election; dare: random drop + rescale; dare_ties: both; lorahub: factor-wise mix (equal "
                   "shapes). ties/dare/dare_ties work on dense updates and factor back by SVD.")
@click.option("--density", type=float,
              help="ties/dare/dare_ties: fraction of each update's entries kept (ties default 0.2, dare 0.5).")
@click.option("--majority-sign", type=click.Choice(["total", "frequency"]),
              help="ties/dare_ties: elect each entry's sign by the weighted sum (total, default) or by count.")
@click.option("--normalize/--no-normalize", default=None,
              help="ties/dare/dare_ties: divide each entry by how many adapters kept it (default: off).")
@click.option("--rescale/--no-rescale", default=None,
              help="dare/dare_ties: divide kept entries by density (default: on).")
@click.option("--rank", type=click.IntRange(min=1),
              help="linear/delta/lorahub: re-compress to at most this rank; ties/dare: the SVD rank "
                   "(default: the sum of the input ranks). The truncation error is reported.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds DARE's random drop.")
@click.option("--name", metavar="NS/NAME", help="Register the result as a composed version (lineage merge:METHOD).")
@click.option("--task", help="Task of the registered version (default: the sources' tasks joined with +).")
@click.option("--description", help="Description of the registered version.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write the adapter folder here.")
@click.option("--force", is_flag=True, help="Replace an adapter already in --output.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
              show_default=True, help="Tensor dtype of the written adapter.")
@json_option
@click.pass_context
def merge(ctx, refs, weights, method, density, majority_sign, normalize, rescale, rank, seed, name, task,
          description, output, force, dtype, as_json):
    """Merge the adapters REF... (hub refs or folders) into ONE PEFT adapter with known weights.

    No search and no examples: for weights you already have (see `loramgr compose` to find
    them). A parameter the method does not declare is an error.

    \b
    Examples:
      loramgr merge acme/a acme/b acme/c --weights 0.5,0.3,0.2 --method linear --name acme/abc
      loramgr merge acme/a acme/b --weights 1,1 --method ties --density 0.3 --rank 16 -o out/ab
    """
    from loramgr.composer.merge import merge as run_merge

    if not output and not name:
        raise click.UsageError("pass -o DIR or --name NS/NAME to keep the merged adapter")
    given = {"density": density, "majority_sign": majority_sign, "normalize": normalize, "rescale": rescale}
    params = {key: value for key, value in given.items() if value is not None}
    quiet_libraries()
    hub = registry(ctx) if name or any(not _is_dir(r) for r in refs) else None
    result = run_merge(list(refs), weights, method=method, params=params, rank=rank, seed=seed, output=output,
                       name=name, task=task, description=description, registry=hub, dtype=dtype, overwrite=force)
    if as_json:
        emit_json(result.to_dict())
        return
    print_table([[c.ref or c.label, c.task or "", f"{w:+.4f}"] for c, w in zip(result.sources, result.weights)],
                ["adapter", "task", "weight"])
    shown = ", ".join(f"{k}={v}" for k, v in sorted(result.params.items()))
    error = result.combined.truncation_error
    click.echo(f"\nmerged {len(result.sources)} adapters by {method}{f' ({shown})' if shown else ''}: rank "
               f"{result.combined.rank}, " + ("exact" if error is None else
                                              f"re-compressed, relative error {error:.2e}"))
    if output:
        click.echo(f"wrote {output}")
    if result.version:
        click.echo(f"registered {result.version.ref}")


def _is_dir(ref: str) -> bool:
    from pathlib import Path

    return Path(ref).is_dir()
