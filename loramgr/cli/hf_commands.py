"""import (from a Hugging Face Hub) and export (to one)."""

from __future__ import annotations

import sys

import click

from . import main, registry
from .output import emit_json, human_size, json_option

ENDPOINT_HELP = ("Hugging Face Hub to talk to, e.g. a `loramgr serve` hub's URL "
                 "(default: HF_ENDPOINT, else https://huggingface.co).")
TOKEN_HELP = "Token for that Hub (default: huggingface_hub's own: HF_TOKEN or `hf auth login`)."


def _progress(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()


@main.command("import")
@click.argument("source", metavar="hf://ORG/REPO[@REVISION]")
@click.option("--name", required=True, metavar="NS/NAME", help="Adapter name here, e.g. acme/sentiment.")
@click.option("--task", required=True, help="The task the adapter was trained for (used by search and compose).")
@click.option("--endpoint", envvar="HF_ENDPOINT", metavar="URL", help=ENDPOINT_HELP)
@click.option("--token", help=TOKEN_HELP)
@click.option("--base", help="Base model id; default: the adapter config's, else the model card's base_model.")
@click.option("--tag", "tags", multiple=True, help="Extra tag for this version (repeatable).")
@click.option("--description", help="Free text; default: where the adapter came from.")
@click.option("--convert-pickle", is_flag=True,
              help="Accept a repo whose weights are only a pickled adapter_model.bin (converted to safetensors).")
@json_option
@click.pass_context
def import_command(ctx, source, name, task, endpoint, token, base, tags, description, convert_pickle, as_json):
    """Import the PEFT LoRA adapter of a Hugging Face model repo as the next version of NS/NAME.

    Downloads only the adapter files at REVISION (a branch, tag or commit; default: the main
    branch) with huggingface_hub, then pushes them like `loramgr push` (source: imported).
    """
    from loramgr.hub.hf_bridge import import_adapter

    version = import_adapter(registry(ctx), source, name=name, task=task, endpoint=endpoint, token=token, base=base,
                             tags=tags, description=description, convert_pickle=convert_pickle,
                             progress=_progress(as_json))
    if as_json:
        emit_json(version)
    else:
        click.echo(f"imported {source} as {version.ref}  ({version.task}, rank {version.rank}, "
                   f"{human_size(version.byte_size)})")


@main.command("export")
@click.argument("ref")
@click.option("--to-hf", "repo_id", required=True, metavar="ORG/REPO", help="Model repo to upload to.")
@click.option("--endpoint", envvar="HF_ENDPOINT", metavar="URL", help=ENDPOINT_HELP)
@click.option("--token", help=TOKEN_HELP)
@click.option("--private", is_flag=True, default=None, help="Create the repo private (when it does not exist yet).")
@json_option
@click.pass_context
def export_command(ctx, ref, repo_id, endpoint, token, private, as_json):
    """Upload the adapter REF to a Hugging Face model repo, as one commit.

    REF is NS/NAME (the latest version), NS/NAME@VERSION or NS/NAME:TAG. The upload carries a
    model card with the Hub's metadata (library_name: peft, base_model, base_model_relation:
    adapter, tags) and, for composed adapters, the lineage.
    """
    from loramgr.hub.hf_bridge import export_adapter

    result = export_adapter(registry(ctx), ref, repo_id, endpoint=endpoint, token=token, private=private,
                            progress=_progress(as_json))
    if as_json:
        emit_json(result)
    else:
        click.echo(f"exported {result.ref} to {result.url}  (commit {result.commit[:12]})")
