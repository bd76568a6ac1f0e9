"""The Python API of DESIGN.md section 6: Hub, compose, load_adapter."""

import pytest
import torch

from loramgr import AdapterVersion, Hub, LoramgrError, compose, load_adapter

from . import factories


def test_hub_push_pull_search(home, llama_lora, tmp_path):
    hub = Hub()
    assert hub.settings.home == home.resolve()
    version = hub.push(llama_lora, name="acme/sentiment", task="sentiment")
    assert isinstance(version, AdapterVersion) and version.ref == "acme/sentiment@1"
    path = hub.pull("acme/sentiment:latest")
    assert (path / "adapter_model.safetensors").read_bytes() == (llama_lora / "adapter_model.safetensors").read_bytes()
    assert [v.ref for v in hub.search(task="sentiment", rank=4)] == ["acme/sentiment@1"]
    with pytest.raises(LookupError):
        hub.show("acme/none")
    with pytest.raises(LoramgrError):
        hub.push(llama_lora, name="bad name", task="t")


def test_compose_and_load_adapter(home, llama_dir, tmp_path):
    hub = Hub()
    rows = [("abc", "cba"), ("dog", "god"), ("fox", "xof")]
    for index, task in enumerate(("a", "b")):
        hub.push(factories.make_lora(llama_dir, tmp_path / task, r=4 + 4 * index, seed=index), name=f"lab/{task}",
                 task=task)
    examples = factories.write_examples(tmp_path / "few.jsonl", rows)
    result = compose(str(llama_dir), ["lab/a", "lab/b"], examples, shots=2, budget=5, name="lab/ab", hub=hub)
    assert result.version.ref == "lab/ab@1" and len(result.weights) == 2
    model = load_adapter(str(llama_dir), "lab/ab", hub=hub)
    assert type(model).__name__.startswith("PeftModel")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size
