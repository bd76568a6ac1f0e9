"""The vLLM LoRA resolver plugin, against vLLM's interface (a TEST-ONLY stand-in of
``vllm.lora.resolver`` / ``vllm.lora.request`` when vLLM is not installed: see vllm_standin.py)
and a real local hub (a real remote one in tests/remote/test_vllm_remote.py)."""

from __future__ import annotations

import asyncio
import importlib
import logging
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from loramgr import Hub

from .. import factories
from . import vllm_standin

BASE = "tiny/llama"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def vllm(monkeypatch, home):
    """(the plugin module, vLLM's resolver registry) with the plugin registered as vLLM would."""
    resolver_module = vllm_standin.install(monkeypatch)
    plugin = importlib.import_module("loramgr.integrations.vllm")
    plugin.register()
    return plugin, resolver_module.LoRAResolverRegistry


def resolve(registry, base_model_name: str, lora_name: str):
    """What vLLM's serving layer does for a model name it has not loaded (serving_models.py)."""
    resolver = registry.get_resolver("loramgr")
    return asyncio.run(resolver.resolve_lora(base_model_name, lora_name))


@pytest.fixture(scope="module")
def two_adapters(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-adapters")
    return [factories.make_lora(llama_dir, root / "a", seed=1), factories.make_lora(llama_dir, root / "b", seed=2)]


def test_resolves_names_versions_and_tags_to_verified_snapshots(vllm, home, two_adapters):
    _, registry = vllm
    hub = Hub(home)
    v1 = hub.push(two_adapters[0], name="acme/sql", task="sql", base=BASE)
    v2 = hub.push(two_adapters[1], name="acme/sql", task="sql", base=BASE)
    hub.tag(v1.ref, "prod")

    request = resolve(registry, BASE, "acme/sql")  # latest
    assert request.lora_name == "acme/sql" and request.base_model_name == BASE and request.lora_int_id > 0
    path = Path(request.lora_path)
    assert (path / "adapter_model.safetensors").read_bytes() == \
        (two_adapters[1] / "adapter_model.safetensors").read_bytes()
    assert Path(resolve(registry, BASE, "acme/sql@1").lora_path) == hub.pull(v1.ref)

    prod = resolve(registry, BASE, "acme/sql:prod")
    assert (Path(prod.lora_path) / "adapter_model.safetensors").read_bytes() == \
        (two_adapters[0] / "adapter_model.safetensors").read_bytes()
    hub.tag(v2.ref, "prod")  # the tag moves: the next resolution follows it
    moved = resolve(registry, BASE, "acme/sql:prod")
    assert Path(moved.lora_path) == hub.pull(v2.ref) and moved.lora_int_id != prod.lora_int_id


def test_refuses_an_adapter_for_another_base_model_with_a_log_line(vllm, home, two_adapters, caplog):
    _, registry = vllm
    Hub(home).push(two_adapters[0], name="acme/sql", task="sql", base=BASE)
    with caplog.at_level(logging.INFO, logger="vllm.loramgr"):
        assert resolve(registry, "Qwen/Qwen2.5-0.5B", "acme/sql") is None
    refusal = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusal) == 1
    assert f"it is an adapter for {BASE}, but this server runs Qwen/Qwen2.5-0.5B" in refusal[0]
    assert "LORAMGR_BASE_MODEL" in refusal[0]


def test_base_model_aliases_for_a_server_run_from_a_local_folder(monkeypatch, home, two_adapters):
    monkeypatch.setenv("LORAMGR_BASE_MODEL", f"other/name, {BASE}")
    resolver_module = vllm_standin.install(monkeypatch)
    importlib.import_module("loramgr.integrations.vllm").register()
    Hub(home).push(two_adapters[0], name="acme/sql", task="sql", base=BASE)
    request = resolve(resolver_module.LoRAResolverRegistry, "/models/tiny-llama", "acme/sql")
    assert request is not None and request.base_model_name == BASE


def test_names_that_are_not_in_the_hub_are_left_to_other_resolvers(vllm, home, caplog):
    _, registry = vllm
    with caplog.at_level(logging.INFO, logger="vllm.loramgr"):
        for name in ("gpt-4o", "my adapter", "../etc/passwd", "acme/sql@0"):
            assert resolve(registry, BASE, name) is None
        assert not caplog.records  # not hub references: no noise
        assert resolve(registry, BASE, "acme/nothing") is None
    assert "acme/nothing is not in the hub" in caplog.records[-1].getMessage()


def test_a_corrupted_snapshot_is_not_served(vllm, home, two_adapters, caplog):
    plugin, registry = vllm
    hub = Hub(home)
    version = hub.push(two_adapters[0], name="acme/sql", task="sql", base=BASE)
    weights = hub.pull(version.ref) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    with caplog.at_level(logging.WARNING, logger="vllm.loramgr"):
        assert resolve(registry, BASE, "acme/sql") is None
    assert "does not match its sha256" in caplog.records[-1].getMessage()


def test_entry_point_and_optional_extra():
    found = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "loramgr"]
    assert [ep.value for ep in found] == ["loramgr.integrations.vllm:register"]
    text = (REPO / "pyproject.toml").read_text()
    assert 'vllm = ["vllm' in text


def test_the_core_never_imports_vllm():
    plugin = REPO / "loramgr" / "integrations" / "vllm.py"
    for folder in ("loramgr", "hub", "composer"):
        for source in (REPO / folder).rglob("*.py"):
            if source == plugin:
                continue
            text = source.read_text()
            assert "import vllm" not in text and "from vllm" not in text, source
