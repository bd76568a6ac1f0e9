"""The hub speaks the Hugging Face Hub API: unmodified huggingface_hub and PEFT clients download,
load and upload adapters from a real ``loramgr serve`` (uvicorn in a subprocess) on 127.0.0.1,
and ``loramgr import`` / ``export`` round-trip through it.

The hub's own HF API is the only Hugging Face-compatible server that can run here (these tests
have no network), so it is the server every HF client in this file talks to. The tests set
``HF_HUB_OFFLINE=0`` only for those clients: in this process by patching the flag
huggingface_hub read at import (tests/conftest.py sets ``HF_HUB_OFFLINE=1``), in the PEFT
subprocess through its environment.
"""

from __future__ import annotations

import base64
import filecmp
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner

from loramgr.cli import main
from loramgr.hub.blobs import LocalBlobStore
from loramgr.hub.errors import AdapterNotFound, InvalidArgument
from loramgr.hub.server.hf_api import commit_id
from loramgr.hub.server.hf_commit import SMALL_LINE, read_commit

from .conftest import Tokens, remote
from .helpers import REPO, LiveServer, write_synthetic_adapter

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


@dataclass
class Hub:
    url: str
    home: Path
    token: str  # write token for the namespace "acme"

    def registry(self, client_home: Path):
        return remote(self.url, client_home, self.token)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One hub for the module (each test uses its own adapter names), with a write token for acme."""
    home = tmp_path_factory.mktemp("hf-hub") / "server-home"
    token = Tokens(f"sqlite:///{home / 'registry.db'}").create("acme")
    server = LiveServer(home).start()
    yield Hub(server.url, home, token)
    server.stop()


@pytest.fixture
def hf_online(monkeypatch, tmp_path):
    """huggingface_hub in this process allowed online, with no telemetry and no login token of
    its own (tokens are passed explicitly)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-hf-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def same_files(a: Path, b: Path, names=ADAPTER_FILES) -> bool:
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def cli(home, *args, remote_url=None, token=None):
    env = {"LORAMGR_HOME": str(home), "LORAMGR_REMOTE": remote_url, "LORAMGR_TOKEN": token,
           "LORAMGR_DATABASE_URL": None, "HF_ENDPOINT": None}
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


# -- reading ------------------------------------------------------------------------------------

def test_snapshot_download_returns_a_versions_files_byte_identical(hub, hf_online, llama_lora, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    pusher = hub.registry(tmp_path / "pusher")
    first = pusher.push(llama_lora, name="acme/snap", task="t", tags=["stable"])
    second = pusher.push(write_synthetic_adapter(tmp_path / "other", megabytes=0.5), name="acme/snap", task="t")

    cache = tmp_path / "cache"
    path = Path(snapshot_download(repo_id="acme/snap", revision="1", endpoint=hub.url, cache_dir=cache))
    assert sorted(p.name for p in path.iterdir()) == sorted(ADAPTER_FILES)
    assert same_files(path, llama_lora)
    assert path.name == commit_id(first)  # the snapshot folder is the version's commit

    api = HfApi(endpoint=hub.url)
    assert api.model_info("acme/snap").sha == commit_id(second)  # main: the latest version
    for revision in ("stable", commit_id(first), "1"):
        info = api.model_info("acme/snap", revision=revision, files_metadata=True)
        assert info.sha == commit_id(first) and info.loramgr["ref"] == "acme/snap@1"
        weights = next(s for s in info.siblings if s.rfilename == "adapter_model.safetensors")
        assert weights.lfs.sha256 == next(f.digest for f in first.files if f.name == weights.rfilename)
    assert Path(snapshot_download("acme/snap", revision="stable", endpoint=hub.url, cache_dir=cache)) == path
    latest = Path(snapshot_download("acme/snap", endpoint=hub.url, cache_dir=cache))
    assert same_files(latest, tmp_path / "other", ("adapter_config.json", "adapter_model.safetensors"))
    assert sorted(api.list_repo_files("acme/snap", revision="1")) == sorted(ADAPTER_FILES)


def test_hf_hub_download_of_one_file_with_the_headers_it_reads(hub, hf_online, llama_lora, tmp_path):
    from huggingface_hub import HfApi, errors, get_hf_file_metadata, hf_hub_download, hf_hub_url

    version = hub.registry(tmp_path / "pusher").push(llama_lora, name="acme/one", task="t")
    weights = next(f for f in version.files if f.name == "adapter_model.safetensors")
    path = hf_hub_download("acme/one", "adapter_model.safetensors", endpoint=hub.url, cache_dir=tmp_path / "c",
                           token="hf_a_huggingface_co_token")  # someone else's token is not ours: ignored
    assert filecmp.cmp(path, llama_lora / "adapter_model.safetensors", shallow=False)

    metadata = get_hf_file_metadata(hf_hub_url("acme/one", "adapter_model.safetensors", endpoint=hub.url))
    assert (metadata.commit_hash, metadata.etag, metadata.size) == (commit_id(version), weights.digest, weights.size)
    main_url = f"{hub.url}/acme/one/resolve/main/adapter_model.safetensors"
    redirect = httpx.head(main_url)
    assert redirect.status_code == 307 and f"/resolve/{commit_id(version)}/" in redirect.headers["location"]
    part = httpx.get(main_url, headers={"Range": "bytes=10-19"}, follow_redirects=True)
    assert part.status_code == 206 and part.content == (llama_lora / "adapter_model.safetensors").read_bytes()[10:20]

    api = HfApi(endpoint=hub.url)
    assert api.file_exists("acme/one", "adapter_config.json")
    assert not api.file_exists("acme/one", "adapter_model.bin")
    for call, error in [(lambda: hf_hub_download("acme/one", "nope.json", endpoint=hub.url, cache_dir=tmp_path),
                         errors.RemoteEntryNotFoundError),
                        (lambda: hf_hub_download("acme/one", "README.md", revision="9", endpoint=hub.url,
                                                 cache_dir=tmp_path), errors.RevisionNotFoundError),
                        (lambda: hf_hub_download("acme/none", "README.md", endpoint=hub.url, cache_dir=tmp_path),
                         errors.RepositoryNotFoundError)]:
        with pytest.raises(error):
            call()


PEFT_CLIENT = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model = PeftModel.from_pretrained(base, "acme/peft").eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.load(sys.argv[2])).logits, sys.argv[3])
"""


def test_peft_loads_the_adapter_from_the_hub_with_identical_logits(hub, llama_dir, llama_lora, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub.registry(tmp_path / "pusher").push(llama_lora, name="acme/peft", task="t")
    ids = torch.randint(4, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp_path / "ids.pt")
    # huggingface_hub reads HF_ENDPOINT when it is imported: a fresh process, with it set first.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORAMGR_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PEFT_CLIENT, str(llama_dir), str(tmp_path / "ids.pt"),
                           str(tmp_path / "logits.pt")], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), llama_lora).eval()
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "logits.pt"), local(input_ids=ids).logits)
    assert (tmp_path / "hf-home" / "hub" / "models--acme--peft").is_dir()  # it came through the HF cache


# -- writing ------------------------------------------------------------------------------------

def test_upload_folder_makes_a_version_that_loramgr_search_finds(hub, hf_online, llama_lora, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo("acme/uploaded", exist_ok=True)
    info = api.upload_folder(repo_id="acme/uploaded", folder_path=llama_lora, commit_description="task: sentiment")
    found = cli(tmp_path / "reader", "search", "--task", "sentiment", "--json", remote_url=hub.url)
    assert found.exit_code == 0, found.output
    (version,) = [v for v in json.loads(found.stdout) if v["name"] == "uploaded"]
    assert version["ref"] == "acme/uploaded@1" and info.oid == api.model_info("acme/uploaded").sha
    assert version["source"] == "pushed" and version["task"] == "sentiment"
    api.create_repo("acme/uploaded", exist_ok=True)  # exists now: fine with exist_ok

    # A commit applies to the head, as on the Hub: a new card keeps the weights and the task.
    api.upload_file(path_or_fileobj=b"# card v2\n", path_in_repo="README.md", repo_id="acme/uploaded")
    second = hub.registry(tmp_path / "reader").show("acme/uploaded")
    assert second.number == 2 and second.task == "sentiment"
    assert {f.name: f.digest for f in second.files}["adapter_model.safetensors"] == \
        {f["name"]: f["digest"] for f in version["files"]}["adapter_model.safetensors"]
    # Uploading what is there already changes nothing: no empty version.
    assert api.upload_file(path_or_fileobj=b"# card v2\n", path_in_repo="README.md",
                           repo_id="acme/uploaded").oid == commit_id(second)
    assert hub.registry(tmp_path / "reader").show("acme/uploaded").number == 2


def test_a_commit_with_a_bad_examples_file_is_refused_with_its_line(hub, hf_online, llama_lora, tmp_path):
    from huggingface_hub import HfApi, errors

    folder = tmp_path / "with-examples"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_bytes((llama_lora / name).read_bytes())
    (folder / "examples.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "a"}\n')
    with pytest.raises(errors.HfHubHTTPError) as refused:
        HfApi(endpoint=hub.url, token=hub.token).upload_folder(repo_id="acme/bad-examples", folder_path=folder)
    assert refused.value.response.status_code == 400
    assert 'acme/bad-examples/examples.jsonl, line 2: missing "output"' in str(refused.value)
    with pytest.raises(AdapterNotFound):
        hub.registry(tmp_path / "reader").versions("acme/bad-examples")


def test_an_invalid_upload_is_refused_clearly_and_makes_no_version(hub, hf_online, llama_lora, tmp_path):
    from huggingface_hub import HfApi, errors
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((llama_lora / "adapter_config.json").read_bytes())
    tensors = load_file(llama_lora / "adapter_model.safetensors")
    save_file({k: v for k, v in tensors.items() if "lora_B" not in k}, str(broken / "adapter_model.safetensors"))
    api = HfApi(endpoint=hub.url, token=hub.token)
    with pytest.raises(errors.HfHubHTTPError) as refused:
        api.upload_folder(repo_id="acme/broken", folder_path=broken)
    assert refused.value.response.status_code == 422
    assert "acme/broken" in str(refused.value) and "lora_B" in str(refused.value)
    assert str(hub.home) not in str(refused.value)  # the hub's folders stay out of messages

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_bytes((llama_lora / "adapter_config.json").read_bytes())
    torch.save(tensors, pickled / "adapter_model.bin")
    with pytest.raises(errors.HfHubHTTPError, match="pickled adapter_model.bin") as refused:
        api.upload_folder(repo_id="acme/broken", folder_path=pickled)
    assert refused.value.response.request.url.path.endswith("/preupload/main")  # before any byte was sent

    for token, status, says in [(None, 401, "writing needs a token"), ("hf_not_ours", 401, "huggingface.co token"),
                                (Tokens(f"sqlite:///{hub.home / 'registry.db'}").create("other"), 403, "'other'")]:
        with pytest.raises(errors.HfHubHTTPError, match=says) as refused:
            HfApi(endpoint=hub.url, token=token or False).upload_folder(repo_id="acme/broken", folder_path=llama_lora)
        assert refused.value.response.status_code == status
    with pytest.raises(AdapterNotFound):
        hub.registry(tmp_path / "reader").versions("acme/broken")


def test_import_and_export_round_trip_through_the_cli(hub, hf_online, llama_lora, tmp_path):
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert cli(alice, "push", llama_lora, "--name", "lab/src", "--task", "sentiment").exit_code == 0

    exported = cli(alice, "export", "lab/src", "--to-hf", "acme/exported", "--endpoint", hub.url,
                   "--token", hub.token, "--json")
    assert exported.exit_code == 0, exported.output
    result = json.loads(exported.stdout)
    assert result["ref"] == "lab/src@1" and result["url"] == f"{hub.url}/acme/exported"
    on_hub = hub.registry(tmp_path / "reader").show("acme/exported")
    assert on_hub.task == "sentiment" and result["commit"] == commit_id(on_hub)

    imported = cli(bob, "import", "hf://acme/exported@1", "--name", "lab/back", "--task", "sentiment",
                   "--endpoint", hub.url, "--json")
    assert imported.exit_code == 0, imported.output
    version = json.loads(imported.stdout)
    assert version["ref"] == "lab/back@1" and version["source"] == "imported"
    assert version["description"] == f"Imported from {hub.url}/acme/exported at {commit_id(on_hub)}"
    pulled = cli(bob, "pull", "lab/back", "-o", tmp_path / "back")
    assert pulled.exit_code == 0, pulled.output
    assert same_files(tmp_path / "back", llama_lora, ("adapter_config.json", "adapter_model.safetensors"))
    card = (tmp_path / "back" / "README.md").read_text()
    for line in ("library_name: peft", "base_model_relation: adapter", "- loramgr", "- lora", "  task: sentiment"):
        assert line in card, line

    missing = cli(bob, "import", "hf://acme/never", "--name", "lab/x", "--task", "t", "--endpoint", hub.url)
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1
    assert f"{hub.url}/acme/never: no such model repo" in missing.stderr


# -- in process ---------------------------------------------------------------------------------

def test_errors_have_the_shape_hf_clients_read(client):
    response = client.get("/api/models/acme/none")
    assert response.status_code == 404 and response.headers["x-error-code"] == "RepoNotFound"
    assert response.json() == {"error": response.headers["x-error-message"]}
    assert client.post("/api/models/acme/x/commit/2", content=b"").headers["x-error-message"].startswith("writing")
    bad_yaml = client.post("/api/validate-yaml", json={"content": "---\na: [b\n---\n", "repoType": "model"})
    assert bad_yaml.status_code == 400 and "not valid YAML" in bad_yaml.json()["errors"][0]["message"]


def _line(item: dict) -> bytes:
    return json.dumps(item).encode() + b"\n"


def test_a_commit_body_streams_long_file_lines_into_the_store(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    big = os.urandom(3 * SMALL_LINE)
    body = b"".join([
        _line({"key": "header", "value": {"summary": "s", "description": "task: x"}}),
        _line({"key": "file", "value": {"content": base64.b64encode(big).decode(),
                                        "path": "adapter_model.safetensors", "encoding": "base64"}}),
        _line({"key": "file", "value": {"content": base64.b64encode(b"{}").decode(), "path": "adapter_config.json",
                                        "encoding": "base64"}}),
        _line({"key": "file", "value": {"content": "AAAA", "path": "notes.txt", "encoding": "base64"}}),
        _line({"key": "deletedFile", "value": {"path": "README.md"}})])
    pieces = [body[i:i + 7777] for i in range(0, len(body), 7777)]  # cut anywhere, as a network does
    commit = read_commit(pieces, blobs, max_file_bytes=10 * SMALL_LINE)
    assert commit.description == "task: x"
    kinds = [(op.kind, op.path, op.size) for op in commit.operations]
    assert kinds == [("add", "adapter_model.safetensors", len(big)), ("add", "adapter_config.json", 2),
                     ("add", "notes.txt", None), ("delete", "README.md", None)]  # notes.txt is not stored
    assert blobs.path(commit.operations[0].digest).read_bytes() == big

    path_first = _line({"key": "file", "value": {"path": "x", "content": base64.b64encode(big).decode()}})
    with pytest.raises(InvalidArgument, match="content comes first"):
        read_commit([path_first], blobs, max_file_bytes=10 * SMALL_LINE)
    with pytest.raises(InvalidArgument, match="base64"):
        read_commit([_line({"key": "file", "value": {"content": "!!!!", "path": "README.md"}})], blobs,
                    max_file_bytes=SMALL_LINE)
