"""Gradient weight search: bounds, the L1 term, exported adapters that score what was reported,
reproducibility, and the differentiable injection path against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from loramgr.composer.align import combine
from loramgr.composer.errors import CompositionError
from loramgr.composer.examples import Example
from loramgr.composer.export import export_adapter
from loramgr.composer.gradient import layer_block, search_weights_gradient
from loramgr.composer.injection import inject_composite
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import few_shot_loss, few_shot_losses_with_grad, tokenize_examples

from .. import factories

EXAMPLES = [Example("abc", " cba"), Example("the quick brown fox", " fox brown"), Example("dog", " god"),
            Example("lazy dog", " dog lazy")]
FAMILIES = {"llama": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM}


@pytest.fixture(scope="module", params=["llama", "t5"])
def family(request, llama_dir, t5_dir, tmp_path_factory):
    """A base model folder, its tokenizer and three equal-shaped adapters (different alphas)."""
    base = llama_dir if request.param == "llama" else t5_dir
    out = tmp_path_factory.mktemp(f"gradient-{request.param}")
    folders = [factories.make_lora(base, out / f"a{seed}", seed=seed, alpha=alpha, init_scale=0.3)
               for seed, alpha in ((1, 8), (2, 16), (3, 4))]
    return request.param, base, AutoTokenizer.from_pretrained(base), folders


def fresh_model(base):
    return FAMILIES[AutoConfig.from_pretrained(base).model_type].from_pretrained(base).eval()


def setup(family):
    kind, base, tokenizer, folders = family
    model = fresh_model(base)
    return model, tokenize_examples(model, tokenizer, EXAMPLES), [load_lora(f) for f in folders]


def test_layer_block_is_the_path_up_to_its_first_number():
    assert layer_block("model.layers.12.self_attn.q_proj") == "model.layers.12"
    assert layer_block("encoder.block.1.layer.0.SelfAttention.q") == "encoder.block.1"
    assert layer_block("decoder.block.0.layer.1.EncDecAttention.v") == "decoder.block.0"
    assert layer_block("lm_head") == "all"


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_weights_stay_within_the_bounds(family, granularity):
    model, batch, adapters = setup(family)
    bounds = (-0.2, 0.3)
    # A large learning rate pushes past the bounds at every step unless the weights are projected.
    found = search_weights_gradient(model, adapters, batch, mode="delta", budget=12, bounds=bounds,
                                    granularity=granularity, learning_rate=1.0, screen=False)
    tried = np.array([e.weights for e in found.history])
    assert tried.min() >= bounds[0] - 1e-7 and tried.max() <= bounds[1] + 1e-7
    assert np.isclose(tried, bounds[0]).any() or np.isclose(tried, bounds[1]).any()  # it did reach them
    assert found.loss < found.initial_loss
    for weights in [found.weights, *(found.block_weights or {}).values()]:
        assert all(bounds[0] - 1e-7 <= w <= bounds[1] + 1e-7 for w in weights)


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_loss_includes_the_l1_term_and_a_strong_l1_shrinks_the_weights(family, granularity):
    model, batch, adapters = setup(family)
    runs = {l1: search_weights_gradient(model, adapters, batch, mode="delta", budget=15, l1=l1,
                                        granularity=granularity, screen=False) for l1 in (0.0, 0.05, 20.0)}
    for l1, found in runs.items():
        fitted = np.array(list(found.block_weights.values()) if found.block_weights else [found.weights])
        assert found.loss == pytest.approx(found.task_loss + l1 * np.abs(fitted).mean(), abs=1e-6)
        for evaluation in found.history:
            assert evaluation.loss == pytest.approx(evaluation.task_loss + l1 * np.abs(evaluation.weights).mean(),
                                                    abs=1e-6)
    size = {l1: np.abs(np.array(found.history[-1].weights)).mean() for l1, found in runs.items()}
    assert size[20.0] < 0.5 * size[0.0]
    assert runs[0.0].task_loss <= runs[20.0].task_loss


@pytest.mark.parametrize("mode", ["lorahub", "delta"])
@pytest.mark.parametrize("granularity", ["module", "block"])
def test_exported_adapter_gives_the_reported_loss(family, mode, granularity, tmp_path):
    kind, base, _, _ = family
    model, batch, adapters = setup(family)
    found = search_weights_gradient(model, adapters, batch, mode=mode, budget=10, granularity=granularity,
                                    learning_rate=0.1)
    assert found.loss < found.initial_loss
    if granularity == "block":
        assert len(found.block_weights) == 2 * (1 if kind == "llama" else 2)  # 2 layers (per stack)
        assert len(set(found.module_weights.values())) > 1  # the blocks did get their own weights
    combined = combine(adapters, found.weights, method=mode, module_weights=found.module_weights)
    folder = export_adapter(combined, tmp_path / "out", base_model=str(base),
                            task_type=adapters[0].config.get("task_type"))
    exported = PeftModel.from_pretrained(fresh_model(base), folder).eval()
    assert few_shot_loss(exported, batch) == pytest.approx(found.task_loss, abs=1e-4)


@pytest.mark.parametrize("family", ["llama"], indirect=True)
def test_same_inputs_give_the_same_weights_and_the_model_is_left_as_it_was(family):
    model, batch, adapters = setup(family)
    before = few_shot_loss(model, batch)
    runs = [search_weights_gradient(model, adapters, batch, mode="lorahub", budget=8, granularity="block", seed=3)
            for _ in range(2)]
    assert runs[0].block_weights == runs[1].block_weights
    assert [e.loss for e in runs[0].history] == [e.loss for e in runs[1].history]
    assert all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert few_shot_loss(model, batch) == before


@pytest.mark.parametrize("family", ["llama"], indirect=True)
def test_early_stopping_spends_less_than_the_budget(family):
    model, batch, adapters = setup(family)
    found = search_weights_gradient(model, adapters, batch, mode="delta", budget=200, patience=3, tol=1e-2)
    assert found.stopped_early and found.evaluations < 200


@pytest.mark.parametrize("family", ["llama"], indirect=True)
@pytest.mark.parametrize("mode", ["lorahub", "delta"])
def test_autograd_matches_finite_differences(family, mode):
    model, batch, adapters = setup(family)
    for p in model.parameters():
        p.requires_grad_(False)
    w0 = np.array([0.4, -0.3, 0.7])
    with inject_composite(model, adapters, mode=mode) as composite:
        W = torch.tensor(w0, dtype=torch.float32).unsqueeze(0).requires_grad_(True)
        composite.set_weight_tensors(W)
        few_shot_losses_with_grad(model, batch)[0].backward()
        eps, numeric = 1e-2, []
        for i in range(3):
            losses = []
            for sign in (1, -1):
                composite.set_weights(w0 + sign * eps * np.eye(3)[i])
                losses.append(few_shot_loss(model, batch))
            numeric.append((losses[0] - losses[1]) / (2 * eps))
    assert np.abs(numeric).max() > 1e-3
    np.testing.assert_allclose(W.grad[0].numpy(), numeric, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("family", ["llama"], indirect=True)
def test_bad_arguments_are_composition_errors(family):
    model, batch, adapters = setup(family)
    with pytest.raises(CompositionError, match="granularity"):
        search_weights_gradient(model, adapters, batch, granularity="layer")
    with pytest.raises(CompositionError, match="learning rate"):
        search_weights_gradient(model, adapters, batch, learning_rate=0)
    with pytest.raises(CompositionError, match="budget"):
        search_weights_gradient(model, adapters, batch, budget=0)
    with inject_composite(model, adapters) as composite, pytest.raises(CompositionError, match="shape"):
        composite.set_weight_tensors(torch.zeros(1, 2))


@pytest.mark.parametrize("family", ["llama"], indirect=True)
@pytest.mark.parametrize("mode", ["lorahub", "delta"])
def test_in_place_weights_work_again_after_tensor_weights(family, mode):
    model, batch, adapters = setup(family)
    with inject_composite(model, adapters, mode=mode) as composite:
        composite.set_weights([0.5, -0.2, 0.1])
        expected = few_shot_loss(model, batch)
        for context in (torch.enable_grad, torch.inference_mode):
            with context():
                composite.set_weight_tensors(torch.tensor([[1.0, 1.0, 1.0]], requires_grad=True))
                moved = float(few_shot_losses_with_grad(model, batch)[0])
            assert moved != pytest.approx(expected, abs=1e-3)
            composite.set_weights([0.5, -0.2, 0.1])
            assert few_shot_loss(model, batch) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("family", ["llama", "t5"], indirect=True)
def test_slope_screen_scores_alone_the_adapter_the_slope_at_zero_favours(family):
    model, batch, adapters = setup(family)
    with inject_composite(model, adapters, mode="delta") as composite:
        eps, slopes = 1e-2, []
        for i in range(3):
            ends = []
            for sign in (1, -1):
                composite.set_weights(sign * eps * np.eye(3)[i])
                ends.append(few_shot_loss(model, batch))
            slopes.append((ends[0] - ends[1]) / (2 * eps))
    found = search_weights_gradient(model, adapters, batch, mode="delta", budget=3, granularity="block", screen_top=1)
    everything = search_weights_gradient(model, adapters, batch, mode="delta", budget=3, granularity="block")
    screened = [e.weights for e in found.history[:2]]
    assert screened[0] == (1.0, 1.0, 1.0)  # the plain sum, then only the steepest adapter alone
    assert screened[1] == tuple(np.eye(3)[int(np.argmin(slopes))])
    assert found.evaluations == everything.evaluations - 2
    assert found.initial_loss == pytest.approx(everything.initial_loss, abs=1e-5)


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_shots_per_step_keeps_only_losses_scored_on_every_example(family, granularity, tmp_path):
    kind, base, _, _ = family
    model, batch, adapters = setup(family)
    bounds = (-0.2, 0.3)
    found = search_weights_gradient(model, adapters, batch, mode="delta", budget=8, bounds=bounds,
                                    granularity=granularity, learning_rate=1.0, shots_per_step=2)
    screened = len(adapters) + 1
    assert found.evaluations == screened + 8 // 2  # two groups of two: one full forward per pass
    assert found.loss < found.initial_loss
    with inject_composite(model, adapters, mode="delta") as composite:
        for evaluation in found.history[screened:]:
            matrix = np.array(evaluation.weights).reshape(len(adapters), -1)
            assert matrix.min() >= bounds[0] - 1e-7 and matrix.max() <= bounds[1] + 1e-7
            if matrix.shape[1] == 1:  # a module weight is the exact point; blocks are checked via export
                composite.set_weights(matrix[:, 0])
                assert few_shot_loss(model, batch) == pytest.approx(evaluation.task_loss, abs=1e-5)
    combined = combine(adapters, found.weights, method="delta", module_weights=found.module_weights)
    folder = export_adapter(combined, tmp_path / "out", base_model=str(base),
                            task_type=adapters[0].config.get("task_type"))
    exported = PeftModel.from_pretrained(fresh_model(base), folder).eval()
    assert few_shot_loss(exported, batch) == pytest.approx(found.task_loss, abs=1e-4)
    full = search_weights_gradient(model, adapters, batch, mode="delta", budget=8, bounds=bounds,
                                   granularity=granularity, learning_rate=1.0)
    assert [e.weights for e in found.history[screened:]] != [e.weights for e in full.history[screened:]]
