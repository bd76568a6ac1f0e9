"""Stable Diffusion LoRAs (diffusers' and kohya-style): validated, indexed, pushed as they are,
pulled byte for byte, found by search, loaded back by diffusers, refused by the composer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from loramgr.cli import main
from loramgr.hub.adapter import read_adapter
from loramgr.hub.db.engine import Database
from loramgr.hub.settings import Settings

from .conftest import tiny_pipeline

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture
def run(home):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def stored_manifest(home, ref_number: int = 1) -> dict:
    """The manifest the registry stored for version ``ref_number`` (the first adapter)."""
    database = Database(Settings.load(environ={}, home=str(home)).database_url)
    try:
        with database.read_engine.connect() as connection:
            from sqlalchemy import text

            row = connection.execute(text("SELECT manifest FROM versions WHERE number = :n"), {"n": ref_number}).one()
        return json.loads(row[0])
    finally:
        database.dispose()


def kohya_file(path, *, drop=None, extra=None):
    """A kohya-style SDXL LoRA written by hand with sd-scripts' key naming: UNet linear and conv
    modules and both text encoders, alphas as float32 / bfloat16 / float16 scalars (one missing)."""
    g = torch.Generator().manual_seed(0)
    unet_q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    unet_conv = "lora_unet_down_blocks_0_attentions_0_proj_in"
    te1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_k_proj"
    tensors = {
        f"{unet_q}.lora_down.weight": torch.randn(4, 8, generator=g), f"{unet_q}.lora_up.weight": torch.randn(8, 4, generator=g),
        f"{unet_q}.alpha": torch.tensor(2.0),
        f"{unet_conv}.lora_down.weight": torch.randn(4, 8, 1, 1, generator=g),
        f"{unet_conv}.lora_up.weight": torch.randn(8, 4, 1, 1, generator=g),
        f"{unet_conv}.alpha": torch.tensor(4.0, dtype=torch.bfloat16),
        f"{te1}.lora_down.weight": torch.randn(8, 16, generator=g), f"{te1}.lora_up.weight": torch.randn(16, 8, generator=g),
        f"{te1}.alpha": torch.tensor(8.0, dtype=torch.float16),
        f"{te2}.lora_down.weight": torch.randn(8, 16, generator=g), f"{te2}.lora_up.weight": torch.randn(16, 8, generator=g),
    }
    for key in drop or ():
        tensors.pop(key if "." in key else next(k for k in tensors if k.startswith(key)))
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata={"ss_network_dim": "8"})
    return path


# ---------------------------------------------------------------- reading


def test_diffusers_file_is_described(diffusers_lora):
    folder, tensors = diffusers_lora
    manifest = read_adapter(folder / "pytorch_lora_weights.safetensors")
    assert manifest.format == "diffusers" and manifest.components == ["text_encoder", "unet"]
    assert manifest.rank == 4 and manifest.alpha == 4.0  # no stored alpha: alpha = rank, as diffusers loads it
    assert set(manifest.module_ranks.values()) == {2, 4}
    assert manifest.target_modules == ["q_proj", "to_k", "to_out.0", "to_q", "to_v", "v_proj"]
    assert manifest.param_count == sum(t.numel() for t in tensors.values())
    assert [f.name for f in manifest.files] == ["pytorch_lora_weights.safetensors"]
    # The folder the file was saved in reads the same.
    assert read_adapter(folder).modules == manifest.modules


def test_kohya_file_is_described(tmp_path):
    manifest = read_adapter(kohya_file(tmp_path / "my_style.safetensors"))
    assert manifest.format == "kohya"
    assert manifest.components == ["text_encoder", "text_encoder_2", "unet"]
    assert manifest.rank == 8 and manifest.alpha == 8.0  # te1 (rank 8, float16 alpha 8) sorts before te2
    assert manifest.module_ranks["lora_unet_down_blocks_0_attentions_0_proj_in"] == 4
    # bfloat16 and float32 alphas are read from the file; the missing one is the rank.
    assert manifest.alpha_pattern == {"lora_unet_down_blocks_0_attentions_0_proj_in": 4.0,
                                      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 2.0}
    assert manifest.target_modules == ["k_proj", "proj_in", "q_proj", "to_q"]


@pytest.mark.parametrize("drop, extra, words", [
    (["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"], None, ["no up factor"]),
    (None, {"lora_unet_x_to_k.hada_w1_a": torch.zeros(2, 2)}, ["LyCORIS LoHa", "not LoRA"]),
    (None, {"lora_unet_x_to_k.lora_down.weight": torch.zeros(2, 8),
            "lora_unet_x_to_k.lora_up.weight": torch.zeros(8, 3)}, ["disagree on the rank"]),
    (None, {"lora_unet_x_to_k.lora_mid.weight": torch.zeros(2, 2)}, ["not a kohya LoRA tensor"]),
    (None, {"lora_unet_x_to_k.lora_down.weight": torch.zeros(2, 8), "lora_unet_x_to_k.lora_up.weight": torch.zeros(8, 2),
            "lora_unet_x_to_k.alpha": torch.tensor([1.0, 2.0])}, ["alpha", "one number"]),
    (None, {"model.diffusion_model.weight": torch.zeros(2)}, ["neither a PEFT adapter", "kohya-style"]),
    (None, {"lora_unet_a,b.lora_down.weight": torch.zeros(2, 2)}, ["not a kohya LoRA tensor"]),
])
def test_bad_kohya_files_are_refused_in_one_line_and_nothing_is_stored(run, tmp_path, drop, extra, words):
    path = kohya_file(tmp_path / "bad.safetensors", drop=drop, extra=extra)
    line = one_error_line(run("push", path, "--name", "art/bad", "--task", "style", "--base", SDXL))
    assert all(w in line for w in words), line
    assert "bad.safetensors" in line
    assert run("ls", "--json").stdout.strip() == "[]"


def test_folders_that_are_not_one_lora_file_are_refused(run, tmp_path, diffusers_lora):
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(diffusers_lora[0] / "pytorch_lora_weights.safetensors", two / "a.safetensors")
    shutil.copy(diffusers_lora[0] / "pytorch_lora_weights.safetensors", two / "b.safetensors")
    assert "2 .safetensors files" in one_error_line(run("push", two, "--name", "art/x", "--task", "t", "--base", SD15))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "adapter_config.json is missing" in one_error_line(run("push", empty, "--name", "art/x", "--task", "t"))
    no_base = one_error_line(run("push", diffusers_lora[0], "--name", "art/x", "--task", "t"))
    assert "does not name its base model; pass --base" in no_base
    assert run("ls", "--json").stdout.strip() == "[]"


# ---------------------------------------------------------------- the hub round trip


def test_diffusers_push_pull_search_and_load_back(run, home, tmp_path, diffusers_lora):
    folder, tensors = diffusers_lora
    weights = folder / "pytorch_lora_weights.safetensors"
    pushed = run("push", weights, "--name", "art/ink", "--task", "style", "--base", SD15, "--json")
    assert pushed.exit_code == 0, pushed.output
    version = json.loads(pushed.stdout)
    assert version["rank"] == 4 and version["base_model"] == SD15
    assert [f["name"] for f in version["files"]] == ["pytorch_lora_weights.safetensors"]
    manifest = stored_manifest(home)
    assert manifest["format"] == "diffusers" and manifest["components"] == ["text_encoder", "unet"]

    found = json.loads(run("search", "--base", SD15, "--rank", "4", "--json").stdout)
    assert [v["ref"] for v in found] == ["art/ink@1"]
    assert json.loads(run("search", "--base", SD15, "--rank", "8", "--json").stdout) == []

    out = tmp_path / "pulled"
    assert run("pull", "art/ink", "-o", out).exit_code == 0
    assert (out / weights.name).read_bytes() == weights.read_bytes()

    pipe = tiny_pipeline()
    pipe.load_lora_weights(str(out))
    unet_lora = {n: p for n, p in pipe.unet.named_parameters() if "lora_A" in n or "lora_B" in n}
    text_lora = {n: p for n, p in pipe.text_encoder.named_parameters() if "lora_A" in n or "lora_B" in n}
    assert unet_lora and text_lora
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B"
    loaded = next(p for n, p in unet_lora.items() if n.startswith(key))
    assert torch.equal(loaded.detach(), tensors[f"unet.{key}.weight"])


def test_folder_with_card_is_pushed_with_it(run, tmp_path, diffusers_lora):
    folder = tmp_path / "with-card"
    shutil.copytree(diffusers_lora[0], folder)
    (folder / "README.md").write_text("# ink style\n")
    version = json.loads(run("push", folder, "--name", "art/ink", "--task", "style", "--base", SD15, "--json").stdout)
    assert sorted(f["name"] for f in version["files"]) == ["README.md", "pytorch_lora_weights.safetensors"]
    out = tmp_path / "out"
    run("pull", "art/ink", "-o", out)
    assert (out / "README.md").read_text() == "# ink style\n"


def test_kohya_push_pull_same_bytes_and_search(run, tmp_path):
    path = kohya_file(tmp_path / "my_style.safetensors")
    assert run("push", path, "--name", "art/kohya", "--task", "style", "--base", SDXL).exit_code == 0
    assert [v["ref"] for v in json.loads(run("search", "--base", SDXL, "--rank", "8", "--json").stdout)] \
        == ["art/kohya@1"]
    out = tmp_path / "out"
    run("pull", "art/kohya", "-o", out)
    assert (out / "my_style.safetensors").read_bytes() == path.read_bytes()
    assert run("verify", "art/kohya").exit_code == 0


def test_the_composer_refuses_a_stable_diffusion_lora(run, tmp_path, diffusers_lora):
    from loramgr.composer.errors import UnsupportedAdapter
    from loramgr.composer.lora import load_lora

    run("push", diffusers_lora[0], "--name", "art/ink", "--task", "style", "--base", SD15)
    pulled = tmp_path / "pulled"
    run("pull", "art/ink", "-o", pulled)
    with pytest.raises(UnsupportedAdapter, match="Stable Diffusion LoRA \\(diffusers format\\) cannot be composed"):
        load_lora(pulled)


def test_uploaded_file_names():
    from loramgr.hub.adapter import ADAPTER_FILES
    from loramgr.hub.formats import other_file_problem

    assert other_file_problem(["adapter_config.json", "adapter_model.safetensors"], ADAPTER_FILES) is None
    assert other_file_problem(["my_style.safetensors", "README.md"], ADAPTER_FILES) is None
    assert "not an adapter file" in other_file_problem(["adapter_config.json", "adapter_model.safetensors",
                                                        "extra.safetensors"], ADAPTER_FILES)
    assert other_file_problem(["a.safetensors", "b.safetensors"], ADAPTER_FILES)
    assert other_file_problem(["../x.safetensors"], ADAPTER_FILES)
    assert other_file_problem(["run.sh"], ADAPTER_FILES)


def test_diffusers_module_names_must_be_plain(run, tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"unet.a,b.lora_A.weight": torch.zeros(2, 4), "unet.a,b.lora_B.weight": torch.zeros(4, 2)}, str(path))
    assert "not a diffusers LoRA tensor" in one_error_line(run("push", path, "--name", "art/o", "--task", "t",
                                                               "--base", SD15))


def test_compose_refuses_a_stable_diffusion_lora_in_one_line(run, tmp_path, llama_dir):
    run("push", kohya_file(tmp_path / "style.safetensors"), "--name", "art/k", "--task", "style", "--base", SDXL)
    examples = tmp_path / "few.jsonl"
    examples.write_text('{"input": "a", "output": "b"}\n')
    line = one_error_line(run("compose", "--adapters", "art/k", "--examples", examples, "--shots", 1,
                              "--model", llama_dir,
                              "--name", "art/composed"))
    assert "art/k@1: a Stable Diffusion LoRA (kohya format) cannot be composed" in line
    assert [v["ref"] for v in json.loads(run("ls", "--json").stdout)] == ["art/k@1"]
