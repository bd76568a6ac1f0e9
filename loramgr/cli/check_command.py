"""``loramgr check``: will vLLM, LoRAX or PEFT load an adapter version?"""

from __future__ import annotations

from pathlib import Path

import click

from . import main, registry
from .output import emit_json, json_option


@main.command()
@click.argument("ref")
@click.option("--for", "target", required=True, type=click.Choice(["vllm", "lorax", "peft"]),
              help="The serving stack to check against.")
@click.option("--max-lora-rank", type=click.Choice(["1", "8", "16", "32", "64", "128", "256", "320", "512"]),
              help="vLLM only: the server's --max-lora-rank (default: report the one it needs).")
@json_option
@click.pass_context
def check(ctx, ref, target, max_lora_rank, as_json):
    """Say whether a serving stack will load the adapter REF; exit 1 if it will not.

    REF is NS/NAME (the latest version), NS/NAME@VERSION, NS/NAME:TAG, or the path of an adapter
    folder (checked before pushing). Each problem is one line with what to do about it.
    """
    from loramgr.hub.serving_check import check_folder

    if Path(ref).is_dir():
        folder, shown = Path(ref), ref
    else:
        hub = registry(ctx)
        shown = hub.show(ref).ref
        folder = hub.pull(shown)  # the snapshot cache: pulled once, reused by later checks
    report = check_folder(folder, target, max_lora_rank=int(max_lora_rank) if max_lora_rank else None)
    if as_json:
        emit_json({"ref": shown, **report.to_dict()})
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
        for note in report.notes:
            click.echo(f"note: {note}")
        count = len(report.problems)
        verdict = "loads" if report.ok else f"will not load ({count} problem{'' if count == 1 else 's'})"
        click.echo(f"{shown}: {verdict} in {target}")
    if not report.ok:
        ctx.exit(1)
