"""The injected composite (against PEFT itself) and the nevergrad weight search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from loramgr.composer.errors import CompositionError, IncompatibleAdapters
from loramgr.composer.examples import Example
from loramgr.composer.injection import inject_composite
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import few_shot_loss, few_shot_losses, tokenize_examples
from loramgr.composer.search import search_weights

from .. import factories

EXAMPLES = [Example("abc", " cba"), Example("the quick brown fox", " fox brown"), Example("dog", " god"),
            Example("lazy dog", " dog lazy"), Example("copy 0123", " 0123")]
FAMILIES = {"llama": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM}


@pytest.fixture(scope="module")
def family(request, llama_dir, t5_dir, tmp_path_factory):
    """A base model folder, its tokenizer and adapters: three of equal shape on two modules
    (different alphas), one of that rank on all attention modules, one of another rank."""
    kind = request.param
    base = llama_dir if kind == "llama" else t5_dir
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"] if kind == "llama" else ["q", "k", "v", "o"]
    out = tmp_path_factory.mktemp(f"adapters-{kind}")
    folders = [factories.make_lora(base, out / f"a{seed}", seed=seed, alpha=alpha, init_scale=0.3)
               for seed, alpha in ((1, 8), (2, 16), (3, 4))]
    folders.append(factories.make_lora(base, out / "wide", r=4, alpha=8, targets=attention, seed=4, init_scale=0.5))
    folders.append(factories.make_lora(base, out / "r8", r=8, alpha=16, targets=attention, seed=5, init_scale=1.0))
    return kind, base, AutoTokenizer.from_pretrained(base), folders


def fresh_model(base):
    kind = AutoConfig.from_pretrained(base).model_type
    return FAMILIES[kind].from_pretrained(base).eval()


def both(test):
    return pytest.mark.parametrize("family", ["llama", "t5"], indirect=True)(test)


# --- the injected composite against PEFT ----------------------------------------------------

@both
@pytest.mark.parametrize("mode", ["delta", "lorahub"])
def test_one_hot_weights_reproduce_peft(family, mode):
    kind, base, tokenizer, folders = family
    folders = folders if mode == "delta" else folders[:4]  # lorahub needs equal shapes
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    with inject_composite(model, [load_lora(f) for f in folders], mode=mode) as composite:
        for i, folder in enumerate(folders):
            composite.set_weights(np.eye(len(folders))[i])
            peft_model = PeftModel.from_pretrained(fresh_model(base), folder).eval()
            expected = few_shot_loss(peft_model, batch)
            assert expected != pytest.approx(few_shot_loss(fresh_model(base), batch), abs=1e-3)
            assert few_shot_loss(model, batch) == pytest.approx(expected, abs=1e-5)


@both
@pytest.mark.parametrize("mode", ["delta", "lorahub"])
def test_zero_weights_are_the_base_model_and_remove_restores_it(family, mode):
    kind, base, tokenizer, folders = family
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    expected = few_shot_loss(model, batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    composite = inject_composite(model, [load_lora(f) for f in folders[:3]], mode=mode)
    assert few_shot_loss(model, batch) == expected
    composite.set_weights([1.0, -0.5, 0.7])
    assert few_shot_loss(model, batch) != pytest.approx(expected, abs=1e-3)
    composite.remove()
    assert few_shot_loss(model, batch) == expected
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    inject_composite(model, [load_lora(folders[0])]).remove()  # the model can be injected again


@both
@pytest.mark.parametrize("mode", ["delta", "lorahub"])
def test_batched_candidates_equal_single_evaluations(family, mode):
    kind, base, tokenizer, folders = family
    folders = folders if mode == "delta" else folders[:4]
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    candidates = np.random.default_rng(0).uniform(-1.5, 1.5, size=(4, len(folders)))
    with inject_composite(model, [load_lora(f) for f in folders], mode=mode) as composite:
        composite.set_candidate_weights(candidates)
        batched = few_shot_losses(model, batch, replicas=4).numpy()
        singles = []
        for w in candidates:
            composite.set_weights(w)
            singles.append(few_shot_loss(model, batch))
    assert len(set(np.round(singles, 4))) == 4
    np.testing.assert_allclose(batched, singles, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama"], indirect=True)
@pytest.mark.parametrize("mode", ["delta", "lorahub"])
def test_setting_weights_only_writes_into_existing_tensors(family, mode):
    kind, base, tokenizer, folders = family
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    modules, keys = len(list(model.modules())), list(model.state_dict())
    parameters = [p.data_ptr() for p in model.parameters()]
    with inject_composite(model, [load_lora(f) for f in folders[:3]], mode=mode) as composite:
        composite.set_candidate_weights(np.zeros((2, 3)))
        pointers = [t.data_ptr() for t in composite.state_tensors()]
        for seed in range(3):
            composite.set_candidate_weights(np.random.default_rng(seed).normal(size=(2, 3)))
            few_shot_losses(model, batch, replicas=2)
            assert [t.data_ptr() for t in composite.state_tensors()] == pointers
        assert len(list(model.modules())) == modules
        assert list(model.state_dict()) == keys
        assert [p.data_ptr() for p in model.parameters()] == parameters


@pytest.mark.parametrize("family", ["llama"], indirect=True)
@pytest.mark.parametrize("mode", ["delta", "lorahub"])
def test_mixed_weights_match_the_exported_adapter_in_peft(family, mode, tmp_path):
    """What the search scores is what the export writes (``combine`` + ``export_adapter``)."""
    from loramgr.composer.align import combine
    from loramgr.composer.export import export_adapter

    kind, base, tokenizer, folders = family
    folders = folders if mode == "delta" else folders[:4]  # includes different target modules
    adapters = [load_lora(f) for f in folders]
    weights = np.random.default_rng(1).uniform(-1.5, 1.5, size=len(folders))
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    with inject_composite(model, adapters, mode=mode) as composite:
        composite.set_weights(weights)
        searched = few_shot_loss(model, batch)
    export_adapter(combine(adapters, weights, method=mode), tmp_path / "out", base_model=str(base),
                   task_type="CAUSAL_LM")
    exported = PeftModel.from_pretrained(fresh_model(base), tmp_path / "out").eval()
    assert few_shot_loss(exported, batch) == pytest.approx(searched, abs=1e-5)


@pytest.mark.parametrize("family", ["llama"], indirect=True)
def test_bfloat16_model_matches_peft(family):
    kind, base, tokenizer, folders = family
    model = fresh_model(base).to(torch.bfloat16)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    with inject_composite(model, [load_lora(folders[4])], mode="delta") as composite:
        composite.set_weights([1.0])
        peft_model = PeftModel.from_pretrained(fresh_model(base).to(torch.bfloat16), folders[4]).eval()
        assert few_shot_loss(model, batch) == pytest.approx(few_shot_loss(peft_model, batch), abs=2e-2)


@pytest.mark.parametrize("family", ["llama"], indirect=True)
def test_incompatible_adapters_are_refused_with_a_reason(family, t5_dir, tmp_path):
    kind, base, tokenizer, folders = family
    model = fresh_model(base)
    adapters = [load_lora(folders[0]), load_lora(folders[4])]
    with pytest.raises(IncompatibleAdapters, match="--mode delta"):
        inject_composite(model, adapters, mode="lorahub")
    t5_adapter = load_lora(factories.make_lora(t5_dir, tmp_path / "t5"))
    with pytest.raises(IncompatibleAdapters, match="not in the model"):
        inject_composite(model, [t5_adapter], mode="delta")
    with pytest.raises(CompositionError, match="unknown mode"):
        inject_composite(model, adapters, mode="sum")
    with inject_composite(model, adapters, mode="delta") as composite:
        with pytest.raises(CompositionError, match="already carries"):
            inject_composite(model, adapters, mode="delta")
        with pytest.raises(CompositionError, match=r"shape \(K, 2\)"):
            composite.set_weights([1.0, 2.0, 3.0])
    with pytest.raises(CompositionError, match="PEFT model"):
        inject_composite(PeftModel.from_pretrained(fresh_model(base), folders[0]), adapters[:1])


# --- the search -----------------------------------------------------------------------------

def train_lora_on_examples(base, tokenizer, examples, out_dir, steps=40):
    """A LoRA trained on the examples themselves: the one a good search should pick."""
    model = fresh_model(base)
    batch = tokenize_examples(model, tokenizer, examples)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    torch.manual_seed(0)
    for _ in range(steps):
        logits = peft_model(**batch.model_inputs()).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def search_setup(llama_dir, tmp_path_factory):
    """A llama, its examples batch, and [random, trained-on-the-examples, random] adapters."""
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    out = tmp_path_factory.mktemp("search")
    trained = train_lora_on_examples(llama_dir, tokenizer, EXAMPLES, out / "trained")
    folders = [factories.make_lora(llama_dir, out / "r1", seed=11, init_scale=0.3), trained,
               factories.make_lora(llama_dir, out / "r2", seed=12, init_scale=0.3)]
    model = fresh_model(llama_dir)
    return model, tokenize_examples(model, tokenizer, EXAMPLES), [load_lora(f) for f in folders]


@pytest.mark.parametrize("num_workers", [1, 4])
def test_search_finds_the_adapter_trained_on_the_examples(search_setup, num_workers):
    model, batch, adapters = search_setup
    progress = []
    result = search_weights(model, adapters, batch, mode="delta", budget=40, num_workers=num_workers,
                            callback=lambda done, best: progress.append((done, best)))
    assert result.initial_loss == pytest.approx(few_shot_loss(model, batch) + 0.0)
    # Alone at w = 1 the trained adapter takes the loss from 4.56 to 4.16 (a tiny model learns little).
    assert result.loss < result.initial_loss - 0.15
    assert int(np.argmax(result.weights)) == 1 and result.weights[1] > 0.3
    assert result.evaluations == len(result.history) == 40
    assert progress[-1][0] == 40 and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert all(a[1] >= b[1] for a, b in zip(progress, progress[1:]))  # best loss never goes up
    assert result.loss == pytest.approx(min(e.loss for e in result.history), abs=1e-4)
    assert all(-1.5 <= w <= 1.5 for e in result.history for w in e.weights)
    assert all(not m._forward_hooks for m in model.modules())  # the model is left as it was
    from nevergrad.optimization import metamodel

    assert "float" not in vars(metamodel)  # the numpy 2.4 shim is scoped to the search


def test_reported_loss_is_the_objective_at_the_returned_weights(search_setup):
    model, batch, adapters = search_setup
    result = search_weights(model, adapters, batch, mode="lorahub", budget=12, l1=0.1, num_workers=3)
    with inject_composite(model, adapters, mode="lorahub") as composite:
        composite.set_weights(result.weights)
        task_loss = few_shot_loss(model, batch)
    assert result.task_loss == pytest.approx(task_loss, abs=1e-6)
    assert result.loss == pytest.approx(task_loss + 0.1 * np.mean(np.abs(result.weights)), abs=1e-6)


@pytest.mark.parametrize("num_workers", [1, 3])
def test_search_is_deterministic_for_a_seed(search_setup, num_workers):
    model, batch, adapters = search_setup
    runs = [search_weights(model, adapters, batch, mode="delta", budget=10, seed=7, num_workers=num_workers)
            for _ in range(2)]
    assert runs[0].weights == runs[1].weights
    assert [e.weights for e in runs[0].history] == [e.weights for e in runs[1].history]
    assert (runs[0].optimizer, runs[0].seed, runs[0].mode) == ("NGOpt", 7, "delta")


def test_an_interrupted_search_leaves_no_thread_behind(search_setup):
    """nevergrad runs scipy-based optimizers in a thread that waits for the next score; one left
    waiting after an error (or Ctrl-C) keeps the process from exiting."""
    import threading

    model, batch, adapters = search_setup

    def interrupt(done, best):
        if done == 6:
            raise KeyboardInterrupt

    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt) as interrupted:  # holds the traceback, as a CLI's handler may
        search_weights(model, adapters, batch, mode="delta", budget=40, callback=interrupt)
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
        assert not thread.is_alive(), thread
    assert interrupted.traceback and all(not m._forward_hooks for m in model.modules())


def test_bad_search_arguments_are_composition_errors(search_setup):
    model, batch, adapters = search_setup
    with pytest.raises(CompositionError, match="budget must be"):
        search_weights(model, adapters, batch, budget=0)
    with pytest.raises(CompositionError, match="did you mean.*NGOpt"):
        search_weights(model, adapters, batch, optimizer="ngopt")
    with pytest.raises(CompositionError, match="unknown optimizer 'NoSuchThing'"):
        search_weights(model, adapters, batch, optimizer="NoSuchThing")
    with pytest.raises(CompositionError, match="num_workers"):
        search_weights(model, adapters, batch, num_workers=0)
    for bounds in ((1.0, -1.0), (0.1, 1.0), (-1.0, float("inf"))):
        with pytest.raises(CompositionError, match="bounds"):
            search_weights(model, adapters, batch, bounds=bounds)
    with pytest.raises(CompositionError, match="L1"):
        search_weights(model, adapters, batch, l1=-0.1)
    assert all(not m._forward_hooks for m in model.modules())


def test_other_optimizers_run(search_setup):
    model, batch, adapters = search_setup
    result = search_weights(model, adapters, batch, optimizer="RandomSearch", budget=5, bounds=(0.0, 1.5))
    assert result.optimizer == "RandomSearch" and result.evaluations == 5
    assert result.loss <= result.initial_loss
    assert all(0.0 <= w <= 1.5 for e in result.history for w in e.weights)


def test_screening_scores_the_sum_and_each_adapter_first(search_setup):
    model, batch, adapters = search_setup
    result = search_weights(model, adapters, batch, mode="delta", budget=6, seed=3)
    asked = [e.weights for e in result.history[:4]]
    assert asked == [(1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    plain = search_weights(model, adapters, batch, mode="delta", budget=6, seed=3, screen=False)
    assert [e.weights for e in plain.history[:4]] != asked
    # With a budget of n + 1, screening alone already finds the adapter trained on the examples.
    found = search_weights(model, adapters, batch, mode="delta", budget=4, seed=0)
    assert int(np.argmax(found.weights)) == 1
