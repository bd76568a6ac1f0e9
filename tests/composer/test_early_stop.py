"""Early stopping in the nevergrad search: ``patience`` evaluations without a gain end it."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from loramgr.composer.errors import CompositionError
from loramgr.composer.examples import Example
from loramgr.composer.lora import load_lora
from loramgr.composer.objective import tokenize_examples
from loramgr.composer.search import search_weights

from .. import factories

EXAMPLES = [Example("abc", " cba"), Example("dog", " god"), Example("lazy dog", " dog lazy")]


@pytest.fixture(scope="module")
def setup(llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("early-stop")
    adapters = [load_lora(factories.make_lora(llama_dir, out / f"a{seed}", seed=seed, init_scale=0.3))
                for seed in (1, 2, 3)]
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    return model, tokenize_examples(model, AutoTokenizer.from_pretrained(llama_dir), EXAMPLES), adapters


def test_patience_stops_after_the_screening_once_the_loss_stalls(setup):
    model, batch, adapters = setup
    full = search_weights(model, adapters, batch, budget=60, optimizer="TwoPointsDE", seed=1)
    early = search_weights(model, adapters, batch, budget=60, optimizer="TwoPointsDE", seed=1, patience=5, tol=0.05)
    assert not full.stopped_early and full.evaluations == 60
    assert early.stopped_early and 4 + 5 <= early.evaluations < 60  # never inside the 4 screening points
    # Up to where it stopped, it saw exactly what the full search saw.
    assert early.history == full.history[:early.evaluations]
    best = min(e.loss for e in early.history[:-5])
    assert all(e.loss >= best - 0.05 for e in early.history[-5:])


def test_bad_patience_is_a_composition_error(setup):
    model, batch, adapters = setup
    with pytest.raises(CompositionError, match="patience"):
        search_weights(model, adapters, batch, patience=0)
    with pytest.raises(CompositionError, match="tolerance"):
        search_weights(model, adapters, batch, patience=3, tol=-1.0)
