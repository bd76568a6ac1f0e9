"""Shortlisting: a planted right module among 50 in a real hub comes out on top, candidates are
streamed (never more than ``per_forward`` loaded), and batched scores equal single ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from loramgr.composer.errors import CompositionError
from loramgr.composer.examples import Example
from loramgr.composer.injection import inject_composite
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import few_shot_loss, few_shot_losses_with_grad, tokenize_examples
from loramgr.composer.shortlist import hub_pool, shortlist
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from .. import factories

EXAMPLES = [Example("abc", " cba"), Example("the quick brown fox", " fox brown"), Example("dog", " god"),
            Example("lazy dog", " dog lazy"), Example("copy 0123", " 0123")]
POOL, PLANTED_AT = 50, 37


def variants(template, out, count, *, first_seed=100, scale=0.3):
    """``count`` adapters shaped like ``template``, with seeded random factors (cheap: no model)."""
    tensors = load_file(str(template / "adapter_model.safetensors"))
    folders = []
    for i in range(count):
        generator = torch.Generator().manual_seed(first_seed + i)
        folder = out / f"v{first_seed + i}"
        folder.mkdir()
        shutil.copy(template / "adapter_config.json", folder)
        save_file({k: torch.randn(v.shape, generator=generator) * scale for k, v in tensors.items()},
                  str(folder / "adapter_model.safetensors"))
        folders.append(folder)
    return folders


def planted(base, out, batch):
    """A LoRA trained briefly on the examples themselves: the right module."""
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(30):
        few_shot_losses_with_grad(peft_model, batch)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pool(llama_dir, tmp_path_factory):
    """Model, batch and 50 adapter folders (three shapes); the planted one at PLANTED_AT."""
    out = tmp_path_factory.mktemp("pool")
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    batch = tokenize_examples(model, AutoTokenizer.from_pretrained(llama_dir), EXAMPLES)
    templates = [factories.make_lora(llama_dir, out / "t-qv", seed=1, init_scale=0.3),
                 factories.make_lora(llama_dir, out / "t-all", r=8, seed=2, init_scale=0.3,
                                     targets=["q_proj", "k_proj", "v_proj", "o_proj"])]
    folders = templates + variants(templates[0], out, 24) + variants(templates[1], out, POOL - 27, first_seed=200)
    folders.insert(PLANTED_AT, planted(llama_dir, out / "planted", batch))
    assert len(folders) == POOL
    return model, batch, folders


def test_planted_module_tops_the_shortlist_of_a_real_hub(pool, home):
    model, batch, folders = pool
    registry = Registry(Settings.load(home=str(home)))
    try:
        for i, folder in enumerate(folders):
            registry.push(folder, name=f"team/m{i:02d}", task="planted" if i == PLANTED_AT else f"task{i % 7}")
        seen = []
        top = shortlist(model, batch, hub_pool(registry), k=5, per_forward=8,
                        progress=lambda scored, best: seen.append((scored, best)))
    finally:
        registry.close()
    assert len(top) == 5
    assert top[0][0].ref == f"team/m{PLANTED_AT:02d}@1" and top[0][0].task == "planted"
    losses = [loss for _, loss in top]
    assert losses == sorted(losses) and losses[0] < losses[1] - 0.1
    assert [s for s, _ in seen] == [8, 16, 24, 32, 40, 48, 50]  # every adapter of the hub was scored
    assert seen[-1][1] == losses[0]


def test_scores_equal_each_candidate_alone_and_ties_keep_pool_order(pool, tmp_path):
    model, batch, folders = pool
    copy = shutil.copytree(folders[0], tmp_path / "copy")  # ties with folders[0], comes later in the pool
    top = shortlist(model, batch, folders[:6] + [copy], k=7, per_forward=4)
    singles = {}
    for folder in folders[:6]:
        with inject_composite(model, [load_lora(folder)], mode="delta") as composite:
            composite.set_weights([1.0])
            singles[folder] = few_shot_loss(model, batch)
    singles[copy] = singles[folders[0]]
    assert len(set(np.round(list(singles.values()), 4))) == 6
    for folder, loss in top:
        assert loss == pytest.approx(singles[folder], rel=1e-5)
    order = [folder for folder, _ in top]
    assert [loss for _, loss in top] == sorted(loss for _, loss in top)
    assert order.index(copy) == order.index(folders[0]) + 1


def test_candidates_are_streamed_per_forward(pool):
    model, batch, folders = pool
    yielded, scored = [0], [0]

    def lazily():
        for folder in folders:
            # Never more than one forward's worth read ahead of what was scored.
            assert yielded[0] - scored[0] < 6
            yielded[0] += 1
            yield folder

    def progress(count, best):
        scored[0] = count

    shortlist(model, batch, lazily(), k=3, per_forward=6, progress=progress)
    assert scored[0] == POOL


def test_adapters_for_another_model_are_skipped(pool, tmp_path):
    model, batch, folders = pool
    wide = tmp_path / "wide"
    wide.mkdir()
    config = json.loads((folders[0] / "adapter_config.json").read_text())
    (wide / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(folders[0] / "adapter_model.safetensors"))
    save_file({k: torch.zeros(v.shape[0] * 2 if "lora_B" in k else v.shape[0], v.shape[1] * (1 + ("lora_A" in k)))
               for k, v in tensors.items()}, str(wide / "adapter_model.safetensors"))
    skipped = []
    top = shortlist(model, batch, [folders[1], wide, folders[2]], k=5, per_forward=3,
                    on_skip=lambda candidate, error: skipped.append((candidate, str(error))))
    assert [f for f, _ in top] and wide not in [f for f, _ in top] and len(top) == 2
    assert skipped and skipped[0][0] == wide and "another base model" in skipped[0][1]
    with pytest.raises(CompositionError, match="no candidate"):
        shortlist(model, batch, [wide], k=5)
    with pytest.raises(CompositionError, match="per_forward"):
        shortlist(model, batch, folders, per_forward=0)
