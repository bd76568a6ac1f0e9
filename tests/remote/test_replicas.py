"""Scale-out: three real ``loramgr serve`` replicas (uvicorn subprocesses, each with its own
home) over one PostgreSQL database and one S3-compatible store (moto's S3 emulator on loopback,
``s3_endpoint`` from tests/s3.py). No replica keeps state of its own on the request path, so
a client may send each request to any replica: what one replica wrote, the others serve.

The schema is migrated once, with ``loramgr db upgrade``, before any replica starts (as the
README's deployment section says).
"""

from __future__ import annotations

import filecmp
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner

pytest.importorskip("boto3")
pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 emulator")

from loramgr.cli import main  # noqa: E402
from loramgr.hub.errors import AdapterNotFound, Unauthorized  # noqa: E402
from loramgr.hub.registry import Registry  # noqa: E402
from loramgr.hub.settings import Settings  # noqa: E402
from tests.postgres import admin_execute, with_database  # noqa: E402

from .conftest import Tokens, remote  # noqa: E402
from .helpers import LiveServer, write_synthetic_adapter  # noqa: E402

pytestmark = pytest.mark.postgres
REPLICAS = 3
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Deployment:
    """The shared database and store, the replicas over them, and a token for ``acme``."""

    def __init__(self, database_url: str, store: str, env: dict, replicas: list[LiveServer], token: str):
        self.database_url, self.store, self.env, self.replicas, self.token = database_url, store, env, replicas, token

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def settings(self, home) -> Settings:
        """Settings of a local registry over the same database and store (to check from outside)."""
        return Settings.load(environ={}, home=str(home), database_url=self.database_url, store=self.store,
                             s3_endpoint_url=self.env["LORAMGR_S3_ENDPOINT_URL"])


@pytest.fixture(scope="module")
def deployment(postgres_url, s3_endpoint, tmp_path_factory, monkeypatch_module):
    import boto3

    root = tmp_path_factory.mktemp("replicas")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_execute(postgres_url, f'CREATE DATABASE "{name}"')
    database_url = with_database(postgres_url, name)
    bucket = f"loramgr-{uuid.uuid4().hex[:12]}"
    for variable, value in AWS.items():
        monkeypatch_module.setenv(variable, value)
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch_module.delenv(variable, raising=False)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/hub"
    env = {**AWS, "LORAMGR_STORE": store, "LORAMGR_S3_ENDPOINT_URL": s3_endpoint}

    # Once, before any replica starts; the replicas then find the schema current.
    upgraded = CliRunner().invoke(main, ["db", "upgrade"], env={"LORAMGR_DATABASE_URL": database_url,
                                                                 "LORAMGR_HOME": str(root / "admin")})
    assert upgraded.exit_code == 0, upgraded.output
    replicas = [LiveServer(root / f"replica-{index}", database_url=database_url, env=env) for index in range(REPLICAS)]
    try:
        with ThreadPoolExecutor(REPLICAS) as pool:  # started side by side: each waits on its imports
            list(pool.map(lambda replica: replica.start(timeout=120), replicas))  # patient on a busy machine
        yield Deployment(database_url, store, env, replicas, Tokens(database_url).create("acme"))
    finally:
        with ThreadPoolExecutor(REPLICAS) as pool:
            list(pool.map(LiveServer.stop, replicas))
        admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    return write_synthetic_adapter(tmp_path_factory.mktemp("tiny") / "adapter", megabytes=0.01, hidden=64, rank=4)


def clients(deployment, home, token=None) -> list:
    """One client per replica, all with one home (one user, talking to whichever replica)."""
    # Patient: on a busy machine the S3 emulator queues requests for many seconds.
    return [remote(url, home, token if token is not None else deployment.token, timeout=180.0)
            for url in deployment.urls]


def test_a_client_alternating_between_replicas_sees_one_hub(deployment, tiny_adapter, tmp_path):
    one, two, three = clients(deployment, tmp_path / "user")
    first = one.push(tiny_adapter, name="acme/alternating", task="sentiment", description="alternating replicas")
    assert two.show("acme/alternating").digest == first.digest
    two.tag(first.ref, "stable")
    assert three.show("acme/alternating:stable").number == 1
    second = three.push(tiny_adapter, name="acme/alternating", task="sentiment")
    assert second.number == 2 and one.show("acme/alternating").number == 2
    for client in (one, two, three):
        assert [v.ref for v in client.search(query="alternating")] == ["acme/alternating@2"]
    one.rm("acme/alternating@2")
    assert two.show("acme/alternating").number == 1
    with pytest.raises(AdapterNotFound):
        three.show("acme/alternating@2")
    out = three.pull("acme/alternating:stable", output=tmp_path / "pulled")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert filecmp.cmp(tiny_adapter / name, out / name, shallow=False)
    assert two.verify("acme/alternating@1").ok


def test_blobs_uploaded_through_one_replica_commit_through_another(deployment, tiny_adapter):
    headers = {"Authorization": f"Bearer {deployment.token}"}
    files = {}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        data = (tiny_adapter / name).read_bytes()
        files[name] = hashlib.sha256(data).hexdigest()
        put = httpx.put(f"{deployment.urls[0]}/api/blobs/{files[name]}", content=data, headers=headers)
        assert put.status_code == 201, put.text
        assert httpx.head(f"{deployment.urls[2]}/api/blobs/{files[name]}").status_code == 200
    committed = httpx.post(f"{deployment.urls[1]}/api/adapters/acme/split/versions", headers=headers,
                           json={"files": files, "task": "t"})
    assert committed.status_code == 201, committed.text
    assert committed.json()["ref"] == "acme/split@1"
    shown = httpx.get(f"{deployment.urls[2]}/api/versions/acme/split@1").json()
    assert {f["name"]: f["digest"] for f in shown["files"]} == files


def test_huggingface_hub_uploads_through_one_replica_and_downloads_through_another(deployment, tiny_adapter,
                                                                                    tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants, snapshot_download

    # huggingface_hub online for this test only (tests/conftest.py sets HF_HUB_OFFLINE=1).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-hf-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    HfApi(endpoint=deployment.urls[0], token=deployment.token).upload_folder(
        repo_id="acme/from-hf", folder_path=tiny_adapter, commit_message="task: t")
    path = snapshot_download("acme/from-hf", endpoint=deployment.urls[2], cache_dir=tmp_path / "cache")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert filecmp.cmp(tiny_adapter / name, f"{path}/{name}", shallow=False)


def test_a_revoked_token_is_refused_by_every_replica_at_once(deployment, tiny_adapter, tmp_path):
    tokens = Tokens(deployment.database_url)
    secret = tokens.create("acme")
    for client in clients(deployment, tmp_path / "user", secret):
        client.push(tiny_adapter, name="acme/revoked", task="t")  # valid everywhere...
    tokens.revoke_secret(secret)
    for client in clients(deployment, tmp_path / "user", secret):
        with pytest.raises(Unauthorized, match="revoked"):  # ...and refused everywhere, no cache
            client.tag("acme/revoked@1", "x")


@pytest.mark.slow
def test_eight_clients_across_three_replicas_get_200_gapless_versions(deployment, tiny_adapter, tmp_path):
    pushers, pushes = 8, 25

    def pusher(worker: int) -> list[int]:
        # Each client sends each push to the next replica, with a model card of its own, so
        # every push uploads one new blob and shares the others.
        hubs = clients(deployment, tmp_path / f"client-{worker}")
        folder = tmp_path / f"adapter-{worker}"
        folder.mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (folder / name).write_bytes((tiny_adapter / name).read_bytes())
        numbers = []
        for index in range(pushes):
            (folder / "README.md").write_text(f"worker {worker} push {index}\n")
            numbers.append(hubs[(worker + index) % REPLICAS].push(folder, name="acme/busy", task="t").number)
        return numbers

    with ThreadPoolExecutor(pushers) as pool:
        reported = [n for numbers in pool.map(pusher, range(pushers)) for n in numbers]
    expected = list(range(1, pushers * pushes + 1))
    assert sorted(reported) == expected
    checker = remote(deployment.urls[1], tmp_path / "checker")
    assert sorted(v.number for v in checker.versions("acme/busy")) == expected
    assert checker.show("acme/busy").number == pushers * pushes
    registry = Registry(deployment.settings(tmp_path / "outside"))
    try:
        report = registry.verify()
        assert report.ok, report.problems
        assert report.unreferenced_blobs == 0
    finally:
        registry.close()
