"""The README documents every command, setting and error code (datasette's habit)."""

from pathlib import Path

import click

from loramgr.cli import main
from loramgr.hub.errors import all_error_classes
from loramgr.hub.settings import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_command_is_in_the_readme():
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        assert f"loramgr {name}" in README or f"| {name} " in README, name


def test_every_setting_is_in_the_readme():
    for _, variable, _ in SETTINGS:
        assert f"`{variable}`" in README, variable


def test_every_error_code_is_in_the_readme():
    import loramgr.composer.errors  # noqa: F401  (registers the composer's error classes)
    import loramgr.examples.lab.manifest  # noqa: F401
    import loramgr.hub.server.errors  # noqa: F401

    for cls in all_error_classes():
        assert f"`{cls.code}`" in README, cls.code
