"""Examples files, tokenisation masks and the few-shot objective."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from loramgr.composer.errors import CompositionError, ExamplesError
from loramgr.composer.examples import Example, examples_digest, read_examples, sample_examples
from loramgr.composer.objective import IGNORE, few_shot_loss, l1_penalty, split_batch, tokenize_examples

from .. import factories

EXAMPLES = [Example("abc", " cba"), Example("the quick brown fox", " fox"), Example("dog", " god dog")]


@pytest.fixture(scope="module")
def llama(llama_dir):
    return AutoModelForCausalLM.from_pretrained(llama_dir).eval(), AutoTokenizer.from_pretrained(llama_dir)


@pytest.fixture(scope="module")
def t5(t5_dir):
    return AutoModelForSeq2SeqLM.from_pretrained(t5_dir).eval(), AutoTokenizer.from_pretrained(t5_dir)


# --- examples files -------------------------------------------------------------------------

def test_read_examples_skips_blank_lines_and_ignores_extra_keys(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n\n   \n{"input": "c", "output": "d", "task": "x"}\n')
    assert read_examples(path) == [Example("a", "b"), Example("c", "d")]


@pytest.mark.parametrize("line, what", [
    ('{"input": "a", "output": ', "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"input": "a"}', 'missing "output"'),
    ('{"input": 3, "output": "b"}', '"input" must be a string'),
])
def test_bad_line_names_file_and_line_number(tmp_path, line, what):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n\n' + line + "\n")
    with pytest.raises(ExamplesError) as error:
        read_examples(path)
    assert f"{path}, line 3:" in str(error.value) and what in str(error.value)
    assert error.value.details["line"] == 3


def test_empty_or_missing_file_is_an_examples_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ExamplesError, match="no examples"):
        read_examples(tmp_path / "empty.jsonl")
    with pytest.raises(ExamplesError, match="cannot read"):
        read_examples(tmp_path / "missing.jsonl")


def test_sample_examples_is_deterministic_and_keeps_order():
    examples = [Example(str(i), str(i)) for i in range(20)]
    picked = sample_examples(examples, 5, seed=3)
    assert picked == sample_examples(examples, 5, seed=3)
    assert [int(e.input) for e in picked] == sorted(int(e.input) for e in picked)
    assert len(set(picked)) == 5
    assert sample_examples(examples, 20, seed=0) == examples


def test_sample_examples_says_how_many_there_are():
    with pytest.raises(ExamplesError, match="only 3 examples"):
        sample_examples(EXAMPLES, 4, seed=0)
    with pytest.raises(ExamplesError, match="at least 1"):
        sample_examples(EXAMPLES, 0, seed=0)


def test_examples_digest_is_canonical_and_order_sensitive(tmp_path):
    digest = examples_digest(EXAMPLES)
    assert len(digest) == 64 and digest == examples_digest(list(EXAMPLES))
    assert digest != examples_digest(EXAMPLES[::-1])
    path = factories.write_examples(tmp_path / "ex.jsonl", [(e.input, e.output) for e in EXAMPLES])
    assert examples_digest(read_examples(path)) == digest


# --- tokenisation and loss ------------------------------------------------------------------

@pytest.mark.parametrize("pack", [True, False])
def test_causal_labels_cover_only_output_and_eos(llama, pack):
    model, tokenizer = llama
    batch = tokenize_examples(model, tokenizer, EXAMPLES, pack=pack)
    answers = [tokenizer(e.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for e in EXAMPLES]
    assert batch.label_tokens == sum(len(a) for a in answers)
    if pack:
        assert batch.size == 1 and "attention_mask" not in batch.inputs
        assert batch.label_ids.tolist() == [t for a in answers for t in a]
    else:
        assert batch.size == len(EXAMPLES)
        for row, answer in zip(batch.labels.tolist(), answers):
            assert [t for t in row if t != IGNORE] == answer


def test_packing_falls_back_to_padding_when_the_model_mixes_examples(llama, monkeypatch):
    import transformers.masking_utils as masking

    model, tokenizer = llama
    padded = few_shot_loss(model, tokenize_examples(model, tokenizer, EXAMPLES, pack=False))
    # Without packed-sequence detection, the examples in one row would attend to each other.
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    assert batch.size == len(EXAMPLES) and "attention_mask" in batch.inputs
    assert few_shot_loss(model, batch) == padded


@pytest.mark.parametrize("pack", [True, False])
def test_causal_loss_matches_a_hand_computed_loss_over_output_tokens(llama, pack):
    model, tokenizer = llama
    batch = tokenize_examples(model, tokenizer, EXAMPLES, pack=pack)
    total, count = 0.0, 0
    for example in EXAMPLES:  # one unpadded example at a time, full logits
        prompt = tokenizer(example.input)["input_ids"]
        answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        # The logit at t predicts token t + 1: the answer is predicted from len(prompt) - 1 on.
        predicting = logits[len(prompt) - 1: len(prompt) - 1 + len(answer)]
        total += F.cross_entropy(predicting, torch.tensor(answer), reduction="sum").item()
        count += len(answer)
    assert few_shot_loss(model, batch) == pytest.approx(total / count, rel=1e-5)


def test_loss_is_token_weighted_not_a_mean_of_example_means(llama, t5):
    for model, tokenizer in (llama, t5):
        per_example = [tokenize_examples(model, tokenizer, [e]) for e in EXAMPLES]
        tokens = np.array([b.label_tokens for b in per_example])
        losses = np.array([few_shot_loss(model, b) for b in per_example])
        assert len(set(tokens)) > 1  # otherwise the test proves nothing
        expected = (tokens * losses).sum() / tokens.sum()
        assert few_shot_loss(model, tokenize_examples(model, tokenizer, EXAMPLES)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("family, pack", [("llama", True), ("llama", False), ("t5", True)])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_split_batch_groups_whole_examples_whose_losses_make_up_the_whole(llama, t5, family, pack, size):
    model, tokenizer = llama if family == "llama" else t5
    examples = EXAMPLES + [Example("lazy dog", " dog lazy")]
    batch = tokenize_examples(model, tokenizer, examples, pack=pack)
    groups = split_batch(batch, size)
    assert len(groups) == -(-len(examples) // size)
    assert sum(g.label_tokens for g in groups) == batch.label_tokens
    # Each group scores exactly its own examples: the same loss as tokenising them alone.
    for i, group in enumerate(groups):
        alone = tokenize_examples(model, tokenizer, examples[i * size:(i + 1) * size], pack=pack)
        assert few_shot_loss(model, group) == pytest.approx(few_shot_loss(model, alone), abs=1e-5)
    weighted = sum(few_shot_loss(model, g) * g.label_tokens for g in groups) / batch.label_tokens
    assert weighted == pytest.approx(few_shot_loss(model, batch), abs=1e-5)


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_split_batch_refuses_a_group_size_below_one(llama, size):
    model, tokenizer = llama
    with pytest.raises(CompositionError, match="whole number >= 1"):
        split_batch(tokenize_examples(model, tokenizer, EXAMPLES), size)


def test_seq2seq_masks_padding_and_matches_the_models_own_loss(t5):
    model, tokenizer = t5
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    assert batch.is_encoder_decoder
    target = tokenizer([e.output for e in EXAMPLES], padding=True, return_tensors="pt")
    assert batch.label_tokens == int(target["attention_mask"].sum())
    labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
    source = tokenizer([e.input for e in EXAMPLES], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**source, labels=labels).loss.item()  # HF: mean over non-ignored tokens
    assert few_shot_loss(model, batch) == pytest.approx(expected, rel=1e-5)


def test_no_examples_or_no_output_tokens_are_rejected(t5):
    model, tokenizer = t5
    with pytest.raises(ExamplesError):
        tokenize_examples(model, tokenizer, [])
    with pytest.raises(ExamplesError, match="no output tokens"):
        tokenize_examples(model, tokenizer, [Example("abc", "")])


def test_training_mode_is_restored_and_does_not_change_the_loss(llama):
    model, tokenizer = llama
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    expected = few_shot_loss(model, batch)
    model.train()
    try:
        assert few_shot_loss(model, batch) == expected
        assert model.training
    finally:
        model.eval()


def test_l1_penalty_is_lorahubs():
    assert l1_penalty([0.5, -1.5]) == pytest.approx(0.05 * 1.0)
    assert l1_penalty([0.5, -1.5], l1=0.2) == pytest.approx(0.2)
    assert np.allclose(l1_penalty([[1, 1], [0, -2]]), [0.05, 0.05])


def test_objective_adds_the_penalty_to_the_task_loss(llama, llama_lora):
    from loramgr.composer.injection import inject_composite
    from loramgr.composer.lora import load_lora
    from loramgr.composer.objective import Objective

    model, tokenizer = llama
    batch = tokenize_examples(model, tokenizer, EXAMPLES)
    with inject_composite(model, [load_lora(llama_lora)]) as composite:
        score = Objective(composite, batch, l1=0.1).score([0.6])
        assert score.task_loss == pytest.approx(few_shot_loss(model, batch))
        assert score.loss == pytest.approx(score.task_loss + 0.1 * 0.6)
        with pytest.raises(CompositionError):
            Objective(composite, batch, l1=-1)


def test_examples_file_roundtrip_with_unicode(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"input": "é", "output": "ü"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_examples(path) == [Example("é", "ü")]
