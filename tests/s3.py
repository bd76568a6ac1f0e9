"""The S3 emulator for the tests (a pytest plugin, like tests/postgres.py).

There is no real S3 or MinIO here: moto's S3 emulator (``moto_server``, from the ``dev`` extra)
runs as a subprocess on 127.0.0.1 on a free port, once per session, and the tests talk to it
over HTTP with boto3 exactly as they would to an S3-compatible server.

- ``s3_endpoint`` (session): the emulator's URL.
- ``aws_env``: dummy credentials and the endpoint (``LORAMGR_S3_ENDPOINT_URL``), nothing from
  the real environment.
- ``s3_location``: ``s3://BUCKET/team/blobs`` in a fresh bucket per test.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.remote.helpers import free_port


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 emulator on 127.0.0.1, polled until it answers, stopped after the session."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 emulator")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch):
    """Dummy credentials and the emulator's endpoint, and nothing from the real environment."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LORAMGR_S3_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3_location(aws_env) -> str:
    """A store location in a fresh bucket of its own."""
    import boto3

    bucket = f"loramgr-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team/blobs"
