import pytest

from loramgr.hub.registry import Registry


@pytest.fixture
def settings(registry_settings):
    """Settings for a fresh home on SQLite or PostgreSQL (``database_url`` is parametrized)."""
    return registry_settings


@pytest.fixture
def registry(settings):
    registry = Registry(settings)
    yield registry
    registry.close()
