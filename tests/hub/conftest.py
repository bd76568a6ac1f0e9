import pytest

from loramgr.hub.registry import Registry
from tests.postgres import settings_for


@pytest.fixture
def blob_store(request) -> str:
    """Where the registry keeps its blobs: "local" (the default) or "s3" (a bucket on the moto
    emulator). A module runs its registry tests on both with
    ``pytest.mark.parametrize("blob_store", BLOB_STORES, indirect=True)``."""
    return getattr(request, "param", "local")


BLOB_STORES = ["local", "s3"]


@pytest.fixture
def settings(registry_settings, blob_store, request):
    """Settings for a fresh home on SQLite or PostgreSQL (``database_url`` is parametrized),
    with the blobs in the local folder or in S3 (``blob_store``)."""
    if blob_store == "local":
        return registry_settings
    return settings_for(registry_settings.home, registry_settings.database_url,
                        store=request.getfixturevalue("s3_location"),
                        s3_endpoint_url=request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def registry(settings):
    registry = Registry(settings)
    yield registry
    registry.close()


def pytest_collection_modifyitems(config, items):
    # S3 runs with SQLite only: the blob store and the metadata store are independent, and the
    # PostgreSQL runs on the local store already cover what the metadata store does.
    def params(item) -> dict:
        return item.callspec.params if hasattr(item, "callspec") else {}

    both = [item for item in items if params(item).get("blob_store") == "s3"
            and params(item).get("database_url") == "postgres"]
    if both:
        config.hook.pytest_deselected(items=both)
        left = set(map(id, both))
        items[:] = [item for item in items if id(item) not in left]
