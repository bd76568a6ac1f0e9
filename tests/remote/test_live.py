"""A real ``loramgr serve`` (uvicorn in a subprocess) and real clients: round trips through the
CLI, a cut-off pull that resumes, a corrupt download, a server killed mid-push, idle clients,
and a server that writes only inside its home."""

from __future__ import annotations

import filecmp
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.hub.errors import AdapterNotFound, IntegrityError, RemoteError
from loramgr.hub.registry import SNAPSHOT_MARKER

from .conftest import remote
from .helpers import CuttingProxy, LiveServer, write_synthetic_adapter


def cli(home, *args, remote_url=None, token=None):
    env = {"LORAMGR_HOME": str(home), "LORAMGR_REMOTE": remote_url, "LORAMGR_TOKEN": token,
           "LORAMGR_DATABASE_URL": None}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def weights_blob(server_home, version):
    digest = next(f.digest for f in version.files if f.name == "adapter_model.safetensors")
    return server_home / "blobs" / "sha256" / digest[:2] / digest


def test_push_from_one_home_pull_from_another(live_server, tokens, llama_dir, llama_lora, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    token = tokens.create("acme")
    server = live_server()
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    pushed = cli(alice, "push", llama_lora, "--name", "acme/sentiment", "--task", "sentiment", "--tag", "stable",
                 "--json", remote_url=server.url, token=token)
    assert pushed.exit_code == 0, pushed.output
    version = json.loads(pushed.stdout)
    assert version["ref"] == "acme/sentiment@1" and sorted(version["tags"]) == ["latest", "stable"]

    pulled = cli(bob, "pull", "acme/sentiment:stable", "-o", tmp_path / "pulled", "--json", remote_url=server.url)
    assert pulled.exit_code == 0, pulled.output
    out = tmp_path / "pulled"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert filecmp.cmp(llama_lora / name, out / name, shallow=False)

    ids = torch.randint(4, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), llama_lora).eval()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), out).eval()
    with torch.no_grad():
        assert torch.equal(original(input_ids=ids).logits, loaded(input_ids=ids).logits)

    # Without -o the pull lands in bob's cache for this hub, complete with its marker.
    cached = Path(cli(bob, "pull", "acme/sentiment", remote_url=server.url).stdout.strip())
    assert cached.is_relative_to(bob) and (cached / SNAPSHOT_MARKER).exists()
    assert os.listdir(bob) == ["remote-snapshots"]  # a client keeps no registry of its own
    assert not alice.exists()


def test_same_commands_same_results_local_or_remote(live_server, tokens, llama_lora, tmp_path):
    token = tokens.create("acme")
    server = live_server()

    def session(**where):
        outputs = [cli(tmp_path / "client", *args, **where) for args in (
            ("push", llama_lora, "--name", "acme/a", "--task", "sql", "--description", "first", "--json"),
            ("push", llama_lora, "--name", "acme/a", "--task", "sql", "--tag", "stable", "--json"),
            ("tag", "acme/a@1", "old", "--json"),
            ("search", "--task", "sql", "--all-versions", "--json"),
            ("ls", "--json"), ("show", "acme/a:old", "--json"), ("rm", "acme/a@2", "--json"),
            ("show", "acme/a", "--json"), ("verify", "acme/a", "--json"), ("show", "acme/none"),
            ("tag", "acme/a", "latest"))]
        return [(r.exit_code, r.stdout, r.stderr) for r in outputs]

    def comparable(text):
        return text.replace('"created_at"', "") if not text.startswith("{") and not text.startswith("[") else \
            json.dumps(_without_times(json.loads(text)), sort_keys=True)

    local = session()
    served = session(remote_url=server.url, token=token)
    for (code_l, out_l, err_l), (code_r, out_r, err_r) in zip(local, served, strict=True):
        assert code_l == code_r
        assert comparable(out_l) == comparable(out_r)
        assert err_l == err_r


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "created_at"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_a_pull_cut_off_halfway_resumes_and_verifies(live_server, tokens, big_adapter, tmp_path):
    server = live_server()
    pusher = remote(server.url, tmp_path / "pusher", tokens.create("acme"))
    version = pusher.push(big_adapter, name="acme/big", task="t")
    size = next(f.size for f in version.files if f.name == "adapter_model.safetensors")

    proxy = CuttingProxy(server.port, cut_after=size // 2, cuts=2)
    try:
        received = []
        path = remote(proxy.url, tmp_path / "puller").pull("acme/big", output=tmp_path / "out",
                                                          progress=received.append)
    finally:
        proxy.close()
    assert proxy.cuts_done == 2 and proxy.saw_request_header(b"\r\nRange: bytes=")
    weights = "adapter_model.safetensors"
    assert filecmp.cmp(big_adapter / weights, path / weights, shallow=False)
    assert sum(received) == version.byte_size  # resumed, not downloaded again
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_corrupted_download_is_detected_and_not_left_in_place(live_server, tokens, big_adapter, tmp_path,
                                                                server_home):
    server = live_server()
    version = remote(server.url, tmp_path / "pusher", tokens.create("acme")).push(big_adapter, name="acme/big",
                                                                                  task="t")
    blob = weights_blob(server_home, version)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot on the hub's disk
    blob.write_bytes(bytes(data))

    puller = remote(server.url, tmp_path / "puller")
    with pytest.raises(IntegrityError, match="adapter_model.safetensors .* is corrupt"):
        puller.pull("acme/big", output=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json"]
    with pytest.raises(IntegrityError):
        puller.pull("acme/big")  # into the snapshot cache: not marked complete, no corrupt file
    cache = puller.snapshot_dir(version)
    assert not (cache / SNAPSHOT_MARKER).exists() and not (cache / "adapter_model.safetensors").exists()
    assert [p["problem"] for p in puller.verify("acme/big").problems] == ["corrupt"]


def test_server_killed_mid_push_registers_nothing(tokens, tmp_path, server_home):
    adapter = write_synthetic_adapter(tmp_path / "adapter", megabytes=24)
    token = tokens.create("acme")
    server = LiveServer(server_home).start()
    try:
        sent = []

        def kill_after_a_few_mb(count):
            sent.append(count)
            if sum(sent) > 6_000_000 and server.process is not None:
                server.kill()

        with pytest.raises(RemoteError, match="cannot reach the hub"):
            remote(server.url, tmp_path / "client", token, retries=2).push(adapter, name="acme/big", task="t",
                                                                           progress=kill_after_a_few_mb)
        server.start()
        client = remote(server.url, tmp_path / "client", token)
        admin = remote(server.url, tmp_path / "client", tokens.create("*"))
        with pytest.raises(AdapterNotFound):
            client.show("acme/big")
        report = admin.verify()
        assert client.ls() == [] and report.ok and report.dead_temp_files == 1  # the killed upload's
        blobs = {p.name for p in (server_home / "blobs" / "sha256").glob("??/*")}
        assert blobs <= {_sha(adapter / "adapter_config.json")}  # uploaded first, not registered
        collected = admin.gc(grace_seconds=0)
        assert collected.removed_temp_files == 1 and collected.removed_blobs == len(blobs)

        # A server that comes back while the client is still retrying: the push just completes.
        sent.clear()

        def restart_once(count):
            sent.append(count)
            if sum(sent) > 6_000_000 and not restarted:
                restarted.append(True)
                server.kill()
                server.start()

        restarted: list = []
        version = client.push(adapter, name="acme/big", task="t", progress=restart_once)
        assert restarted and version.number == 1 and [v.number for v in client.versions("acme/big")] == [1]
        assert admin.verify().ok
    finally:
        server.stop()


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stalled_and_vanished_uploaders_leave_nothing(live_server, tokens, server_home):
    server = live_server("--timeout", "0.5")
    head = (f"PUT /api/blobs/{'a' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens.create('acme')}\r\n"
            "Content-Length: 1000000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + b"x" * 10_000)  # ... and then nothing
        sock.settimeout(10)
        started = time.monotonic()
        answer = b""
        while b"}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    assert time.monotonic() - started < 5

    tmp = server_home / "blobs" / "tmp"

    def wait_for(condition) -> bool:
        deadline = time.monotonic() + 5
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        return condition()

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + b"x" * 300_000)
        assert wait_for(lambda: any(tmp.iterdir()))  # the upload is being written ...
    # ... and the client hangs up: its temp file goes, no blob appears.
    assert wait_for(lambda: not any(tmp.iterdir()))
    assert not list((server_home / "blobs").glob("sha256/??/*"))


def test_the_server_writes_only_inside_its_home(tokens, llama_lora, tmp_path, server_home):
    watched = {name: tmp_path / name for name in ("cwd", "tmpdir", "user-home")}
    for folder in watched.values():
        folder.mkdir()
    token, admin = tokens.create("acme"), tokens.create("*")
    server = LiveServer(server_home, cwd=watched["cwd"], env={
        "TMPDIR": str(watched["tmpdir"]), "HOME": str(watched["user-home"]),
        "XDG_CACHE_HOME": str(watched["user-home"] / ".cache"), "XDG_DATA_HOME": str(watched["user-home"] / "d")})
    server.log_path = tmp_path / "server.log"
    server.start()
    try:
        client = remote(server.url, tmp_path / "client", token)
        client.push(llama_lora, name="acme/a", task="t")
        client.push(llama_lora, name="acme/a", task="t", tags=["x"])
        client.pull("acme/a@1", output=tmp_path / "pulled")
        client.tag("acme/a@1", "old")
        client.rm("acme/a@2")
        maintainer = remote(server.url, tmp_path / "client", admin)
        maintainer.gc(grace_seconds=0)
        assert maintainer.verify().ok
    finally:
        server.stop()
    for name, folder in watched.items():
        assert list(folder.rglob("*")) == [], name


def test_compose_finds_its_candidates_and_examples_on_the_remote_hub(live_server, tokens, llama_dir, tmp_path):
    from .. import factories

    token = tokens.create("lab")
    server = live_server()
    for index, task in enumerate(("a", "b")):
        adapter = factories.make_lora(llama_dir, tmp_path / task, r=4, seed=index, init_scale=0.3)
        examples = factories.write_examples(tmp_path / f"{task}.jsonl", [("abc", "cba"), ("dog", "god")])
        pushed = cli(tmp_path / "alice", "push", adapter, "--name", f"lab/{task}", "--task", task,
                     "--examples", examples, remote_url=server.url, token=token)
        assert pushed.exit_code == 0, pushed.output
    composed = cli(tmp_path / "bob", "compose", "--tasks", "a,b", "--model", llama_dir, "--shots", "2",
                   "--budget", "4", "--name", "lab/ab", "--json", remote_url=server.url, token=token)
    assert composed.exit_code == 0, composed.output
    data = json.loads(composed.stdout)
    assert [m["source"] for m in data["modules"]] == ["lab/a@1", "lab/b@1"] and data["examples"] == 4
    shown = cli(tmp_path / "carol", "show", "lab/ab", "--json", remote_url=server.url)
    lineage = json.loads(shown.stdout)["lineage"]
    assert lineage["mode"] == "delta" and [s["ref"] for s in lineage["sources"]] == ["lab/a@1", "lab/b@1"]
