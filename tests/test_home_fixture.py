"""The ``home`` fixture isolates a test from the developer's own ``LORAMGR_*`` settings."""

from __future__ import annotations

import os

import pytest

from loramgr.hub.settings import SETTINGS, Settings


@pytest.fixture
def developer_environment(monkeypatch):
    """What a developer's shell may hold: every setting, plus one loramgr does not know yet."""
    for _, variable, _ in SETTINGS:
        monkeypatch.setenv(variable, "s3://someone-elses-bucket" if variable == "LORAMGR_STORE" else "leaked")
    monkeypatch.setenv("LORAMGR_SOMETHING_NEW", "leaked")
    monkeypatch.setenv("LORAMGR_TEST_KEPT", "harness")


def test_home_clears_every_loramgr_setting(developer_environment, home):
    # The harness's own LORAMGR_TEST_* (CI's PostgreSQL URL, say) are kept; the test's marker shows it.
    left = {k: v for k, v in os.environ.items()
            if k.startswith("LORAMGR_") and not (k.startswith("LORAMGR_TEST_") and k != "LORAMGR_TEST_KEPT")}
    assert left == {"LORAMGR_HOME": str(home), "LORAMGR_TEST_KEPT": "harness"}
    settings = Settings.load()
    assert settings.home == home and settings.store == str(home / "blobs")
    assert settings.remote is None and settings.token is None
