"""Exported folders are ordinary PEFT adapters that compute exactly the combined update."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from loramgr.composer.align import combine
from loramgr.composer.export import export_adapter
from loramgr.composer.lora import load_lora
from loramgr.hub.errors import DestinationNotEmpty, InvalidArgument

from .. import factories

FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors"]


def make_sources(base_dir: Path, root: Path, specs: dict) -> list:
    return [load_lora(factories.make_lora(base_dir, root / name, **spec), label=f"acme/{name}")
            for name, spec in specs.items()]


@pytest.fixture(scope="module")
def llama_source_dirs(llama_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("llama_sources")
    return [
        factories.make_lora(llama_dir, root / "summarise", r=4, alpha=8, targets=["q_proj", "v_proj"], seed=1),
        factories.make_lora(llama_dir, root / "translate", r=8, alpha=4, targets=["v_proj", "o_proj", "down_proj"],
                            seed=2, use_rslora=True),
    ]


@pytest.fixture(scope="module")
def llama_sources(llama_source_dirs):
    return [load_lora(folder, label=f"acme/{folder.name}") for folder in llama_source_dirs]


@pytest.fixture(scope="module")
def t5_sources(t5_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("t5_sources")
    return make_sources(t5_dir, root, {
        "qa": dict(r=4, alpha=8, targets=["q", "v"], seed=3),
        "nli": dict(r=2, alpha=16, targets=["k", "o", "wi"], seed=4, rank_pattern={"wi": 3}),
    })


def model_with_deltas_added(base, combined):
    """The base model with each combined update added to its weight by hand."""
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for module, factors in combined.modules.items():
            layer = merged.get_submodule(module)
            layer.weight += factors.delta().to(layer.weight.dtype)
    return merged


def logits(model, kind):
    ids = torch.tensor([[3, 10, 20, 30, 40, 50, 60, 1]])
    with torch.no_grad():
        if kind == "t5":
            return model(input_ids=ids, decoder_input_ids=ids[:, :5]).logits
        return model(input_ids=ids).logits


@pytest.mark.parametrize("kind, method, rank", [("llama", "delta", None), ("llama", "lorahub", None),
                                                ("llama", "delta", 3), ("t5", "delta", None)])
def test_peft_loads_the_export_and_computes_the_combined_update(kind, method, rank, request, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    base_dir = request.getfixturevalue(f"{kind}_dir")
    sources = request.getfixturevalue(f"{kind}_sources")
    if method == "lorahub":  # lorahub needs equal shapes: mix an adapter with itself
        sources = [sources[0], sources[0]]
    combined = combine(sources, [0.8, -0.5], method=method, rank=rank)
    folder = export_adapter(combined, tmp_path / "out", base_model=str(base_dir),
                            task_type="SEQ_2_SEQ_LM" if kind == "t5" else "CAUSAL_LM", card={"score": 1.25})

    auto = AutoModelForSeq2SeqLM if kind == "t5" else AutoModelForCausalLM
    # float64 so that the comparison sees the algebra, not float32 round-off
    base = auto.from_pretrained(base_dir).double().eval()
    expected = logits(model_with_deltas_added(base, combined), kind)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
    wrapped = sorted(n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                     if hasattr(m, "lora_A") and "default" in m.lora_A)
    assert wrapped == sorted(combined.modules)  # exactly these modules, no more
    torch.testing.assert_close(logits(peft_model, kind), expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(expected, logits(base, kind))  # the update does something

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == combined.rank
    assert config["target_modules"] == sorted(combined.modules)
    assert not config["use_rslora"] and config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    assert config["base_model_name_or_path"] == str(base_dir) and config["peft_type"] == "LORA"


def test_export_round_trips_through_load_lora(llama_sources, tmp_path):
    combined = combine(llama_sources, [1.0, 0.3])
    folder = export_adapter(combined, tmp_path / "out", base_model="org/base", task_type="CAUSAL_LM")
    again = load_lora(folder)
    assert sorted(again.modules) == sorted(combined.modules)
    for module, factors in again.modules.items():
        assert factors.scaling == 1.0
        torch.testing.assert_close(factors.delta(), combined.delta(module))
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        assert "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" in f.keys()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


@pytest.mark.parametrize("dtype", [torch.float16, "bf16"])
def test_half_precision_export(llama_sources, tmp_path, dtype):
    combined = combine(llama_sources, [1.0, 1.0])
    folder = export_adapter(combined, tmp_path / "out", base_model="org/base", task_type="CAUSAL_LM", dtype=dtype)
    expected = torch.float16 if dtype == torch.float16 else torch.bfloat16
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {expected}
    assert load_lora(folder).modules.keys() == combined.modules.keys()


def test_model_card_records_the_composition(llama_sources, tmp_path):
    combined = combine(llama_sources, [0.25, -1.5], method="ties", density=0.5, seed=3)
    folder = export_adapter(combined, tmp_path / "out", base_model="org/base", task_type="CAUSAL_LM",
                            card={"name": "acme/mix", "score": 0.75, "objective": "few-shot loss"})
    card = (folder / "README.md").read_text()
    assert card.startswith('---\nbase_model: "org/base"\nlibrary_name: peft\n')
    for text in ["# acme/mix", "| acme/summarise | 0.25 |", "| acme/translate | -1.5 |", "Mode: `ties`",
                 "density=0.5", "Seed: 3", "Score: 0.75 (few-shot loss)", "relative Frobenius"]:
        assert text in card


def export_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


SUBPROCESS_EXPORT = """
import sys
from pathlib import Path
from loramgr.composer.align import combine
from loramgr.composer.export import export_adapter
from loramgr.composer.lora import load_lora
*folders, out = map(Path, sys.argv[1:])
sources = [load_lora(folder, label=f"acme/{folder.name}") for folder in folders]
export_adapter(combine(sources, [0.5, 0.5]), out, base_model="org/base", task_type="CAUSAL_LM", card={"score": 2.0})
"""


def export_twice_in_process(sources, tmp_path) -> list[Path]:
    combined = combine(sources, [0.5, 0.5])
    return [export_adapter(combined, tmp_path / name, base_model="org/base", task_type="CAUSAL_LM",
                           card={"score": 2.0}) for name in ("one", "two")]


def test_same_inputs_give_the_same_bytes(llama_sources, tmp_path):
    first, second = export_twice_in_process(llama_sources, tmp_path)
    assert list(export_bytes(first)) == FILES
    assert export_bytes(first) == export_bytes(second)


@pytest.mark.slow
def test_same_bytes_from_another_process(llama_sources, llama_source_dirs, tmp_path):
    """Another process has another hash seed: set ordering must not leak into the files."""
    first, _ = export_twice_in_process(llama_sources, tmp_path)
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", SUBPROCESS_EXPORT, *map(str, llama_source_dirs), str(tmp_path / "three")],
                   check=True, env=env, cwd=tmp_path)
    assert export_bytes(tmp_path / "three") == export_bytes(first)


def test_a_folder_with_files_is_not_overwritten_unless_asked(llama_sources, tmp_path):
    combined = combine(llama_sources, [1.0, 1.0])
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(DestinationNotEmpty):
        export_adapter(combined, folder, base_model="org/base", task_type="CAUSAL_LM")
    assert os.listdir(folder) == ["keep.txt"]
    export_adapter(combined, folder, base_model="org/base", task_type="CAUSAL_LM", overwrite=True)
    assert sorted(os.listdir(folder)) == FILES
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folders left behind


def test_target_modules_must_cover_every_module(llama_sources, tmp_path):
    combined = combine(llama_sources, [1.0, 1.0])
    with pytest.raises(InvalidArgument, match="down_proj"):
        export_adapter(combined, tmp_path / "a", base_model="org/base", task_type="CAUSAL_LM",
                       target_modules=["q_proj", "v_proj", "o_proj"])
    folder = export_adapter(combined, tmp_path / "b", base_model="org/base", task_type="CAUSAL_LM",
                            target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    assert json.loads((folder / "adapter_config.json").read_text())["target_modules"] == \
        ["down_proj", "o_proj", "q_proj", "v_proj"]
    with pytest.raises(InvalidArgument, match="dtype"):
        export_adapter(combined, tmp_path / "c", base_model="org/base", task_type="CAUSAL_LM", dtype="int8")
