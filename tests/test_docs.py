"""The README documents every command, setting and error code (datasette's habit)."""

from pathlib import Path

import click

from loramgr.cli import main
from loramgr.hub.errors import HUB_ERRORS
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
    from loramgr.composer.errors import COMPOSER_ERRORS
    from loramgr.examples.lab.manifest import LabBuildFailed, LabNotBuilt

    for cls in [*HUB_ERRORS.values(), *COMPOSER_ERRORS.values(), LabNotBuilt, LabBuildFailed]:
        assert f"`{cls.code}`" in README, cls.code
