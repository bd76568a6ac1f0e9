"""``loramgr check REF --model BASE``: adapter module paths against an architecture built from its
config alone (meta device): missing modules, shape mismatches, layers LoRA cannot adapt, ranks
over the server's limit."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from loramgr.cli import main
from loramgr.hub.adapter import read_adapter
from loramgr.hub.architecture_check import check_architecture
from loramgr.hub.errors import InvalidArgument


def write_adapter(folder, modules: dict[str, tuple[int, int]], *, rank: int = 4, targets=None):
    """A PEFT LoRA folder with zero factors for ``{module path: (in, out)}``."""
    folder.mkdir(parents=True)
    tensors = {}
    for path, (fan_in, fan_out) in modules.items():
        tensors[f"base_model.model.{path}.lora_A.weight"] = torch.zeros(rank, fan_in)
        tensors[f"base_model.model.{path}.lora_B.weight"] = torch.zeros(fan_out, rank)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "task_type": "CAUSAL_LM",
              "target_modules": targets or sorted({p.rsplit(".", 1)[-1] for p in modules})}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 config (no weights): the other architecture."""
    from transformers import GPT2Config

    folder = tmp_path_factory.mktemp("gpt2")
    GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=64).save_pretrained(folder)
    return folder


@pytest.fixture
def run(home):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_an_adapter_fits_its_own_base_model(run, llama_lora, llama_dir):
    result = run("check", llama_lora, "--model", llama_dir)
    assert result.exit_code == 0, result.output
    assert "fits: LlamaForCausalLM" in result.stdout


def test_an_adapter_for_another_architecture_lists_every_missing_module(run, llama_lora, llama_dir, gpt2_dir):
    result = run("check", llama_lora, "--model", gpt2_dir)
    assert result.exit_code == 1
    expected = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")]
    for path in expected:
        assert f"missing in GPT2LMHeadModel: {path}" in result.stderr
    assert "4 of 4 adapter modules do not exist in GPT2LMHeadModel" in result.stderr
    assert "trained for another architecture?" in result.stderr
    report = json.loads(run("check", llama_lora, "--model", gpt2_dir, "--json").stdout)
    assert sorted(report["architecture"]["missing"]) == sorted(expected) and not report["ok"]
    # The pushed version is checked the same way.
    assert run("push", llama_lora, "--name", "acme/l", "--task", "t").exit_code == 0
    assert run("check", "acme/l", "--model", gpt2_dir, "--for", "vllm").exit_code == 1
    assert run("check", "acme/l", "--model", llama_dir, "--for", "vllm").exit_code == 0


def test_gpt2_conv1d_layers_and_shape_mismatches(run, tmp_path, gpt2_dir):
    fits = write_adapter(tmp_path / "fits", {"transformer.h.0.attn.c_attn": (32, 96), "transformer.h.1.mlp.c_fc": (32, 128)})
    assert run("check", fits, "--model", gpt2_dir).exit_code == 0
    wrong = write_adapter(tmp_path / "wrong", {"transformer.h.0.attn.c_attn": (32, 32)})
    result = run("check", wrong, "--model", gpt2_dir, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)["architecture"]
    assert report["mismatched"] == ["transformer.h.0.attn.c_attn: lora_A [4, 32] / lora_B [32, 4], but the Conv1D "
                                    "maps 32 -> 96 features"]
    odd = write_adapter(tmp_path / "odd", {"transformer.h.0.attn": (32, 32)})
    report = check_architecture(read_adapter(odd), str(gpt2_dir))
    assert report.unsupported == ["transformer.h.0.attn is a GPT2Attention"] and not report.ok


def test_ranks_over_the_server_limit(run, llama_lora, llama_dir):
    result = run("check", llama_lora, "--model", llama_dir, "--max-lora-rank", "1")
    assert result.exit_code == 1
    assert "4 modules have a rank above the server's max LoRA rank 1" in result.stderr
    # With --for vllm the serving check reports the rank once, not twice.
    both = json.loads(run("check", llama_lora, "--model", llama_dir, "--for", "vllm", "--max-lora-rank", "1",
                          "--json").stdout)
    assert sum("--max-lora-rank 1" in p or "max LoRA rank 1" in p for p in both["problems"]) == 1


def test_a_7b_config_is_checked_without_allocating_its_weights(tmp_path):
    from transformers import LlamaConfig

    big = tmp_path / "llama-7b-config"
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000).save_pretrained(big)  # config.json only: 6.7e9 parameters would be 27 GB
    adapter = write_adapter(tmp_path / "a", {"model.layers.31.self_attn.q_proj": (4096, 4096),
                                             "model.layers.32.self_attn.q_proj": (4096, 4096)}, rank=8)
    report = check_architecture(read_adapter(adapter), str(big))
    assert report.missing == ["model.layers.32.self_attn.q_proj"] and report.mismatched == []


def test_bad_input(run, llama_lora, tmp_path):
    result = run("check", llama_lora, "--model", tmp_path / "nowhere")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot load its config" in lines[0]
    assert run("check", llama_lora).exit_code == 2  # neither --for nor --model
    with pytest.raises(InvalidArgument, match="positive integer"):
        check_architecture(read_adapter(llama_lora), str(tmp_path), max_lora_rank=0)
