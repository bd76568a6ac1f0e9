"""The Hugging Face bridge without a network: hf:// sources, the exported model card, the
pickle rule on a downloaded repo, and huggingface_hub errors turned into loramgr's. (Import and
export against a live Hub API are in tests/remote/test_hf_api.py.)"""

from __future__ import annotations

import shutil

import httpx2
import pytest
import torch
from huggingface_hub import errors as hf
from safetensors.torch import load_file

from loramgr.hub.errors import (AdapterNotFound, Forbidden, InvalidAdapter, InvalidArgument, InvalidName,
                                PickleRefused, RemoteError)
from loramgr.hub.hf_bridge import HfSource, hf_errors, push_snapshot
from loramgr.hub.hf_card import card_base_model, card_task, export_card, split_card
from loramgr.hub.records import AdapterVersion, Lineage, SourceWeight, VersionFileInfo
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings


def version(**changes) -> AdapterVersion:
    fields = dict(namespace="acme", name="mix", number=3, base_model="org/base", task="sentiment", rank=8,
                  alpha=16.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", dtype="float32",
                  param_count=100, byte_size=1000, digest="d" * 64, source="pushed", description=None,
                  created_at="2026-01-31T12:00:00+00:00", tags=["latest"],
                  files=[VersionFileInfo("adapter_config.json", "a" * 64, 10)])
    return AdapterVersion(**{**fields, **changes})


def test_hf_sources_parse_and_refuse_what_is_not_a_model_repo():
    assert HfSource.parse("hf://org/repo") == HfSource("org/repo")
    assert HfSource.parse("hf://org/repo@v1.0") == HfSource("org/repo", "v1.0")
    assert HfSource.parse("hf://models/org/repo@abc") == HfSource("org/repo", "abc")
    assert str(HfSource("org/repo", "2")) == "hf://org/repo@2"
    for bad in ("org/repo", "hf://datasets/org/data", "hf://org/repo@", "https://huggingface.co/org/repo"):
        with pytest.raises(InvalidArgument):
            HfSource.parse(bad)
    for bad in ("hf://repo", "hf://org/../x", "hf://a/b/c"):
        with pytest.raises(InvalidName):
            HfSource.parse(bad)


def test_export_card_carries_the_hub_metadata_and_the_lineage():
    composed = version(source="composed", description="reverse, then upper", lineage=Lineage(
        sources=[SourceWeight("lab/reverse@1", 0.75), SourceWeight("lab/upper@2", -0.25)], mode="delta", seed=7,
        score=1.2345))
    card = export_card(composed, "org/mix")
    metadata, body = split_card(card)
    assert metadata["library_name"] == "peft" and metadata["base_model"] == "org/base"
    assert metadata["base_model_relation"] == "adapter" and metadata["pipeline_tag"] == "text-generation"
    assert {"loramgr", "lora", "peft"} <= set(metadata["tags"])
    assert metadata["loramgr"]["task"] == "sentiment" and card_task(metadata) == "sentiment"
    assert metadata["loramgr"]["lineage"] == {
        "mode": "delta", "objective": "few_shot_loss", "seed": 7, "score": 1.2345,
        "sources": [{"ref": "lab/reverse@1", "weight": 0.75}, {"ref": "lab/upper@2", "weight": -0.25}]}
    assert "| `lab/reverse@1` | +0.7500 |" in body and "seed 7, score 1.2345" in body
    assert 'PeftModel.from_pretrained(base, "org/mix")' in body


def test_export_card_keeps_the_adapters_own_card_and_replaces_its_own_section():
    own = "---\nlicense: mit\ntags:\n- sentiment\nbase_model: old/base\n---\n# My adapter\n\nTrained on reviews.\n"
    first = export_card(version(), "org/x", own)
    metadata, body = split_card(first)
    assert metadata["license"] == "mit" and metadata["base_model"] == "org/base"
    assert metadata["tags"] == ["loramgr", "lora", "peft", "sentiment"]
    assert body.count("Trained on reviews.") == 1
    again = export_card(version(number=4), "org/x", first)
    assert again.count("<!-- loramgr:begin -->") == 1 and "(version 4)" in again and "(version 3)" not in again
    assert split_card(again)[0]["tags"] == ["loramgr", "lora", "peft", "sentiment"]


def test_card_metadata_is_read_like_huggingface_hub_reads_it():
    assert split_card("# no metadata\n") == ({}, "# no metadata\n")
    assert card_base_model(split_card("---\nbase_model:\n- a/b\n- c/d\n---\n")[0]) == "a/b"
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        split_card("---\nkey: [unclosed\n---\n")
    with pytest.raises(InvalidArgument, match="mapping"):
        split_card("---\n- a list\n---\n")


@pytest.fixture
def registry(tmp_path):
    hub = Registry(Settings.load(environ={}, home=str(tmp_path / "home")))
    yield hub
    hub.close()


def test_a_downloaded_repo_with_only_pickled_weights_follows_the_convert_pickle_rule(registry, llama_lora, tmp_path):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(llama_lora, snapshot)
    torch.save(load_file(snapshot / "adapter_model.safetensors"), snapshot / "adapter_model.bin")
    (snapshot / "adapter_model.safetensors").unlink()

    with pytest.raises(PickleRefused) as refused:
        push_snapshot(registry, snapshot, label="hf://org/pickled", name="acme/pickled", task="t")
    assert str(refused.value).startswith("hf://org/pickled: ") and str(snapshot) not in str(refused.value)
    assert "--convert-pickle" in str(refused.value)

    imported = push_snapshot(registry, snapshot, label="hf://org/pickled", name="acme/pickled", task="t",
                             convert_pickle=True)
    assert imported.source == "imported" and "adapter_model.safetensors" in {f.name for f in imported.files}


def test_a_card_base_model_fills_in_for_a_config_without_one(registry, llama_lora, tmp_path):
    import json

    snapshot = tmp_path / "snapshot"
    shutil.copytree(llama_lora, snapshot)
    config = json.loads((snapshot / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (snapshot / "adapter_config.json").write_text(json.dumps(config))
    (snapshot / "README.md").write_text("---\nbase_model: org/from-card\n---\n")
    version = push_snapshot(registry, snapshot, label="hf://org/x", name="acme/x", task="t")
    assert version.base_model == "org/from-card"


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "http://hub/api/models/org/x"))


@pytest.mark.parametrize("raised, expected, says", [
    (hf.RepositoryNotFoundError("gone", response=_response(404)), AdapterNotFound, "no such model repo"),
    (hf.RevisionNotFoundError("no rev", response=_response(404)), AdapterNotFound, "no such revision"),
    (hf.HfHubHTTPError("denied", response=_response(403), server_message="token may not write"), Forbidden,
     "HTTP 403: token may not write"),  # the server's message is kept
    (hf.HfHubHTTPError("refused", response=_response(422), server_message="no lora_B"), InvalidAdapter,
     "HTTP 422: no lora_B"),
    (hf.HfHubHTTPError("down", response=_response(503)), RemoteError, "HTTP 503"),
    (httpx2.ConnectError("connection refused"), RemoteError, "cannot reach http://hub/org/x: connection refused"),
    (ValueError("Invalid metadata in README.md."), InvalidArgument, "Invalid metadata in README.md."),
])
def test_huggingface_hub_errors_become_one_line_loramgr_errors(raised, expected, says):
    with pytest.raises(expected) as caught, hf_errors("http://hub/org/x"):
        raise raised
    message = str(caught.value)
    assert "http://hub/org/x" in message and "\n" not in message and says in message
