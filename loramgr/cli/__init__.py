"""The ``loramgr`` command: parse, call the library, print. No behaviour lives here."""

from __future__ import annotations

import sys

import click

from loramgr.hub.errors import LoramgrError
from loramgr.hub.settings import SETTINGS, Settings

# "\b" keeps click from re-wrapping the paragraph into one run of text.
ENVIRONMENT_HELP = "\b\n" + "\n".join(f"{variable:<24} {text}" for _, variable, text in SETTINGS)


class LoramgrGroup(click.Group):
    """Turns library errors into one line on stderr and exit code 1; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LoramgrError as exc:
            if ctx.meta.get("loramgr.debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=LoramgrGroup, epilog=f"Environment variables:\n\n{ENVIRONMENT_HELP}",
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False), help="Registry folder (overrides LORAMGR_HOME).")
@click.option("--remote", metavar="URL", help="Use the hub served at URL (overrides LORAMGR_REMOTE).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="loramgr")
@click.pass_context
def main(ctx: click.Context, home, remote, debug):
    """A hub for LoRA adapters: push, pull and search PEFT adapters, and compose new ones
    from old ones with a few examples.

    \b
    Start with:
      loramgr demo                                   see it work on a real LLM (--toy: a tiny offline lab)
      loramgr push ./my-lora --name acme/sql --task text-to-sql
      loramgr search --task text-to-sql --max-rank 16
      loramgr compose --tasks a,b --shots 5 --name acme/ab
    """
    ctx.meta["loramgr.debug"] = debug
    ctx.obj = Settings.load(home=home, remote=remote)


def registry(ctx: click.Context):
    """The registry for this invocation, opened once and closed when the command ends."""
    from loramgr.hub.connect import open_registry

    root = ctx.find_root()
    if "loramgr.registry" not in root.meta:
        backend = open_registry(root.obj)
        root.meta["loramgr.registry"] = backend
        root.call_on_close(backend.close)
    return root.meta["loramgr.registry"]


from . import compose_command, db_commands, demo_command, registry_commands  # noqa: E402,F401  (registers the commands)
from . import check_command  # noqa: E402,F401  (registers `loramgr check`)
from . import serve_commands  # noqa: E402,F401  (registers `loramgr serve` and `loramgr token`)
from . import hf_commands  # noqa: E402,F401  (registers `loramgr import` and `loramgr export`)
from . import merge_command  # noqa: E402,F401  (registers `loramgr merge`)
