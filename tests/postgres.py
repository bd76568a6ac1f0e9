"""PostgreSQL for tests: a session fixture ``postgres_url`` (owned by the team-hub work)."""

import os

import pytest


@pytest.fixture(scope="session")
def postgres_url():
    url = os.environ.get("LORAMGR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server (set LORAMGR_TEST_POSTGRES_URL; .ci/run does)")
    return url
