"""``loramgr check``: will vLLM, LoRAX or PEFT load an adapter version, and does it fit the base model?"""

from __future__ import annotations

from pathlib import Path

import click

from . import main, registry
from .output import emit_json, json_option


@main.command()
@click.argument("ref")
@click.option("--for", "target", type=click.Choice(["vllm", "lorax", "peft"]),
              help="The serving stack to check against.")
@click.option("--model", metavar="BASE",
              help="A base model (folder or Hub id): build it from its config alone (meta device, no weights) "
                   "and report adapter modules it lacks, shape mismatches and, with --max-lora-rank, ranks "
                   "over the limit.")
@click.option("--max-lora-rank", type=click.Choice(["1", "8", "16", "32", "64", "128", "256", "320", "512"]),
              help="The server's --max-lora-rank (vLLM; default: report the one it needs).")
@json_option
@click.pass_context
def check(ctx, ref, target, model, max_lora_rank, as_json):
    """Say whether a serving stack will load the adapter REF, and whether it fits the base model
    --model; exit 1 if not.

    REF is NS/NAME (the latest version), NS/NAME@VERSION, NS/NAME:TAG, or the path of an adapter
    folder (checked before pushing). Each problem is one line with what to do about it. Pass
    --for, --model, or both.

    \b
    Examples:
      loramgr check acme/sql --for vllm --max-lora-rank 16
      loramgr check acme/sql --model meta-llama/Llama-3.2-1B     # every module path exists, shapes fit
    """
    from loramgr.hub.adapter import read_adapter
    from loramgr.hub.architecture_check import check_architecture
    from loramgr.hub.serving_check import check_folder

    if target is None and model is None:
        raise click.UsageError("pass --for vllm|lorax|peft, --model BASE, or both")
    if Path(ref).is_dir():
        folder, shown = Path(ref), ref
    else:
        hub = registry(ctx)
        shown = hub.show(ref).ref
        folder = hub.pull(shown)  # the snapshot cache: pulled once, reused by later checks
    limit = int(max_lora_rank) if max_lora_rank else None
    report = check_folder(folder, target, max_lora_rank=limit) if target else None
    # With --for vllm the serving check already compares the rank with the limit.
    architecture = (check_architecture(read_adapter(folder, digests=False), model,
                                       max_lora_rank=None if target == "vllm" else limit) if model else None)
    problems = (report.problems if report else []) + (architecture.problems if architecture else [])
    notes = report.notes if report else []
    if as_json:
        shown_report = report.to_dict() if report else {"target": None, "problems": problems, "notes": notes,
                                                        "ok": not problems}
        data = {"ref": shown, **shown_report, "problems": problems, "ok": not problems}
        if architecture:
            data["architecture"] = architecture.to_dict()
        emit_json(data)
    else:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        if architecture and architecture.missing:
            for path in architecture.missing:
                click.echo(f"  missing in {architecture.architecture}: {path}", err=True)
        for note in notes:
            click.echo(f"note: {note}")
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        if architecture is None:
            click.echo(f"{shown}: {'loads' if not problems else f'will not load ({count})'} in {target}")
        else:
            checked = f"{architecture.architecture} ({model})" + (f" and {target}" if target else "")
            click.echo(f"{shown}: {'fits' if not problems else f'does not fit ({count})'}: {checked}")
    if problems:
        ctx.exit(1)
