"""push, pull, search, ls, show, tag, rm, verify, gc."""

from __future__ import annotations

from pathlib import Path

import click

from . import main, registry
from .output import (VERSION_HEADERS, byte_progress, emit_json, human_size, json_option, print_table,
                     version_rows)

REF_HELP = "REF is NS/NAME (the latest version), NS/NAME@VERSION or NS/NAME:TAG."


def emit_versions(found, *, as_json: bool, empty: str) -> None:
    """A table of versions (or JSON); ``empty`` on stderr when there are none."""
    if as_json:
        emit_json(found)
    elif found:
        print_table(version_rows(found), VERSION_HEADERS)
    else:
        click.echo(empty, err=True)


def _folder_size(path: Path) -> int:
    if Path(path).is_file():
        return Path(path).stat().st_size
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) if Path(path).is_dir() else 0


@main.command()
@click.argument("path", type=click.Path())
@click.option("--name", required=True, metavar="NS/NAME", help="Adapter name, e.g. acme/sentiment.")
@click.option("--task", required=True, help="The task the adapter was trained for (used by search and compose).")
@click.option("--base", help="Base model id; default: base_model_name_or_path of adapter_config.json.")
@click.option("--tag", "tags", multiple=True, help="Extra tag for this version (repeatable); 'latest' moves by itself.")
@click.option("--description", help="Free text, searched by `loramgr search --query`.")
@click.option("--examples", type=click.Path(dir_okay=False),
              help="JSON Lines few-shot examples to register with the version (used by compose).")
@click.option("--convert-pickle", is_flag=True,
              help="Accept a pickled adapter_model.bin: loaded with torch.load(weights_only=True), stored as safetensors.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True),
              help="With --convert-pickle and a loralib checkpoint: the lora_alpha it was trained with.")
@json_option
@click.pass_context
def push(ctx, path, name, task, base, tags, description, examples, convert_pickle, alpha, as_json):
    """Store the PEFT LoRA folder PATH as the next version of NS/NAME.

    The folder needs adapter_config.json and adapter_model.safetensors; README.md and
    examples.jsonl are kept too. The push is all or nothing.

    PATH may also be a Stable Diffusion LoRA (diffusers' pytorch_lora_weights.safetensors or a
    kohya-style file), or a folder holding one and maybe a README.md: stored byte for byte; name
    its base model with --base. A loralib checkpoint (torch.save of lora.lora_state_dict) is
    converted to a PEFT folder with --convert-pickle --base BASE --alpha ALPHA.
    """
    with byte_progress("push", _folder_size(path), quiet=as_json) as progress:
        version = registry(ctx).push(path, name=name, task=task, base=base, tags=tags, description=description,
                                     examples=examples, convert_pickle=convert_pickle, progress=progress,
                                     alpha=alpha)
    if as_json:
        emit_json(version)
    else:
        click.echo(f"pushed {version.ref}  ({version.task}, rank {version.rank}, {human_size(version.byte_size)}, "
                   f"digest {version.digest[:12]})")


@main.command()
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Folder to write the adapter into (default: the hub's snapshot cache).")
@click.option("--force", is_flag=True, help="Overwrite adapter files in a non-empty --output folder.")
@json_option
@click.pass_context
def pull(ctx, ref, output, force, as_json):
    """Write the adapter REF as a PEFT folder and print its path.

    REF is NS/NAME (the latest version), NS/NAME@VERSION or NS/NAME:TAG. The folder loads with
    peft.PeftModel.from_pretrained as it is.
    """
    hub = registry(ctx)
    version = hub.show(ref)
    with byte_progress("pull", version.byte_size, quiet=as_json) as progress:
        path = hub.pull(version.ref, output=output, force=force, progress=progress)
    if as_json:
        emit_json({"path": str(path), "version": version})
    else:
        click.echo(str(path))


@main.command()
@click.option("--base", help="Base model id (exact).")
@click.option("--task", "tasks", multiple=True, help="Task (exact; repeatable).")
@click.option("--rank", type=int, help="Rank, exactly.")
@click.option("--min-rank", type=int, help="Rank at least this.")
@click.option("--max-rank", type=int, help="Rank at most this.")
@click.option("--target", help="Adapters that target this module name, e.g. q_proj.")
@click.option("--query", "-q", help="Words searched in namespace, name, task and description: each must begin "
              "a word there (`senti` finds sentiment).")
@click.option("--source", type=click.Choice(["pushed", "composed", "imported"]), help="How versions were made.")
@click.option("--all-versions", is_flag=True, help="Every matching version, not only each adapter's newest.")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
@click.pass_context
def search(ctx, base, tasks, rank, min_rank, max_rank, target, query, source, all_versions, limit, as_json):
    """Find adapters by base model, task, rank, target modules or text; newest first."""
    found = registry(ctx).search(base=base, task=list(tasks) or None, rank=rank, min_rank=min_rank,
                                 max_rank=max_rank, target=target, query=query, source=source,
                                 all_versions=all_versions, limit=limit)
    emit_versions(found, as_json=as_json, empty="no adapters match")


@main.command("ls")
@click.argument("namespace", required=False)
@json_option
@click.pass_context
def ls_command(ctx, namespace, as_json):
    """List every adapter (its latest version), optionally of one NAMESPACE."""
    found = registry(ctx).ls(namespace)
    emit_versions(found, as_json=as_json, empty="the registry is empty: add an adapter with `loramgr push`")


@main.command()
@click.argument("ref")
@click.option("--report", type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Also write a composed version's lineage as a self-contained HTML page: the weights as a bar "
                   "chart and the search's loss curve (opens offline).")
@json_option
@click.pass_context
def show(ctx, ref, report, as_json):
    """Everything about one version: config, files, tags and, for composed ones, lineage.

    REF is NS/NAME (the latest version), NS/NAME@VERSION or NS/NAME:TAG.
    """
    version = registry(ctx).show(ref)
    if report:
        from loramgr.hub.report import write_composition_report

        written = write_composition_report(version, report, hub_url=ctx.find_root().obj.remote)
        click.echo(f"report written to {written}", err=True)
    if as_json:
        emit_json(version)
        return
    fields = [("ref", version.ref), ("task", version.task), ("base model", version.base_model),
              ("task type", version.task_type), ("rank / alpha", f"{version.rank} / {version.alpha:g}"),
              ("targets", ", ".join(version.target_modules)), ("dtype", version.dtype),
              ("parameters", f"{version.param_count:,}"), ("size", human_size(version.byte_size)),
              ("source", version.source), ("tags", ", ".join(version.tags)), ("created", version.created_at),
              ("digest", version.digest), ("description", version.description or "")]
    for label, value in fields:
        click.echo(f"{label:<13} {value}")
    click.echo("files")
    for f in version.files:
        click.echo(f"  {f.name:<28} {human_size(f.size):>9}  sha256:{f.digest[:16]}")
    if version.lineage:
        lineage = version.lineage
        score = f", score {lineage.score:.4f}" if lineage.score is not None else ""
        options = lineage.details.get("options")
        prompt_format = options.get("prompt_format") if isinstance(options, dict) else None
        scored_in = f", prompt format {prompt_format}" if isinstance(prompt_format, str) else ""
        click.echo(f"composed      mode {lineage.mode}, seed {lineage.seed}{score}{scored_in}")
        for source in lineage.sources:
            click.echo(f"  {source.weight:+.4f}  {source.ref}")


@main.command()
@click.argument("ref")
@click.argument("tag")
@json_option
@click.pass_context
def tag(ctx, ref, tag, as_json):
    """Point TAG at the version REF names (REF as in `loramgr pull`)."""
    version = registry(ctx).tag(ref, tag)
    emit_json(version) if as_json else click.echo(f"{version.adapter}:{tag} -> {version.ref}")


@main.command()
@click.argument("ref")
@json_option
@click.pass_context
def rm(ctx, ref, as_json):
    """Remove the version REF names. Its number is never reused; `latest` moves back to the
    newest version left; the files are freed by `loramgr gc`."""
    version = registry(ctx).rm(ref)
    emit_json(version) if as_json else click.echo(f"removed {version.ref}")


@main.command()
@click.argument("ref", required=False)
@json_option
@click.pass_context
def verify(ctx, ref, as_json):
    """Re-hash the stored files of REF (default: of every version); exit 1 if any is missing or corrupt."""
    report = registry(ctx).verify(ref)
    if as_json:
        emit_json(report)
    else:
        for problem in report.problems:
            click.echo(f"{problem['problem']}: {problem['ref']} {problem['file']} (sha256:{problem['digest'][:16]})",
                       err=True)
        click.echo(f"checked {report.checked_files} files: {len(report.problems)} problems, "
                   f"{report.unreferenced_blobs} unreferenced blobs, {report.dead_temp_files} leftover temp files")
    if not report.ok:
        ctx.exit(1)


@main.command()
@click.option("--grace", type=float, default=3600, show_default=True, metavar="SECONDS",
              help="Keep unreferenced blobs younger than this (a push may be committing them).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@json_option
@click.pass_context
def gc(ctx, grace, dry_run, as_json):
    """Remove blobs that no version references, temp files left by crashed pushes, and pulled
    snapshots of versions that no longer exist."""
    report = registry(ctx).gc(grace_seconds=grace, dry_run=dry_run)
    if as_json:
        emit_json(report)
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {report.removed_blobs} blobs, {report.removed_temp_files} temp files and "
                   f"{report.removed_snapshots} snapshots of removed versions ({human_size(report.freed_bytes)}); "
                   f"kept {report.kept_recent_blobs} recent unreferenced blobs")
