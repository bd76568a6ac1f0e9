"""Through a real ``loramgr serve``: the vLLM resolver plugin (against the TEST-ONLY stand-in of
vLLM's interface, tests/integrations/vllm_standin.py) resolving from the team hub with
LORAMGR_REMOTE / LORAMGR_TOKEN and following a moved tag; and a kohya-style Stable Diffusion LoRA
pushed and pulled byte for byte over HTTP."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path

from click.testing import CliRunner

from loramgr.cli import main

from ..formats.test_sd_lora import kohya_file
from ..integrations import vllm_standin
from .helpers import write_synthetic_adapter

BASE = "synthetic/base-model"


def cli(home, *args, remote_url, token=None):
    env = {"LORAMGR_HOME": str(home), "LORAMGR_REMOTE": remote_url, "LORAMGR_TOKEN": token,
           "LORAMGR_DATABASE_URL": None}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_resolver_and_stable_diffusion_lora_over_a_team_hub(live_server, tokens, tmp_path, monkeypatch):
    token = tokens.create("acme")
    server = live_server("--private-read")
    alice = tmp_path / "alice"
    for seed in (1, 2):
        adapter = write_synthetic_adapter(tmp_path / f"a{seed}", megabytes=0.1, seed=seed, hidden=64, rank=4)
        assert cli(alice, "push", adapter, "--name", "acme/sql", "--task", "sql", remote_url=server.url,
                   token=token).exit_code == 0
    assert cli(alice, "tag", "acme/sql@1", "prod", remote_url=server.url, token=token).exit_code == 0

    # vLLM's side: its own home, the hub named by LORAMGR_REMOTE and LORAMGR_TOKEN.
    monkeypatch.setenv("LORAMGR_HOME", str(tmp_path / "vllm-host"))
    monkeypatch.setenv("LORAMGR_REMOTE", server.url)
    monkeypatch.setenv("LORAMGR_TOKEN", token)
    registry = vllm_standin.install(monkeypatch).LoRAResolverRegistry
    importlib.import_module("loramgr.integrations.vllm").register()
    resolver = registry.get_resolver("loramgr")
    first = asyncio.run(resolver.resolve_lora(BASE, "acme/sql:prod"))
    assert (Path(first.lora_path) / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "a1" / "adapter_model.safetensors").read_bytes()
    assert Path(first.lora_path).is_relative_to(tmp_path / "vllm-host")
    assert cli(alice, "tag", "acme/sql@2", "prod", remote_url=server.url, token=token).exit_code == 0
    moved = asyncio.run(resolver.resolve_lora(BASE, "acme/sql:prod"))
    assert (Path(moved.lora_path) / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "a2" / "adapter_model.safetensors").read_bytes()
    assert asyncio.run(resolver.resolve_lora("another/base", "acme/sql")) is None

    # A kohya-style file over HTTP: validated by the client and again by the hub, same bytes back.
    style = kohya_file(tmp_path / "my_style.safetensors")
    pushed = cli(alice, "push", style, "--name", "acme/style", "--task", "style", "--base", "sdxl", "--json",
                 remote_url=server.url, token=token)
    assert pushed.exit_code == 0, pushed.output
    assert [f["name"] for f in json.loads(pushed.stdout)["files"]] == ["my_style.safetensors"]
    out = tmp_path / "pulled"
    assert cli(tmp_path / "bob", "pull", "acme/style", "-o", out, remote_url=server.url, token=token).exit_code == 0
    assert (out / "my_style.safetensors").read_bytes() == style.read_bytes()
