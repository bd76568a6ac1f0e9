"""Option scoring with the prompt's cache shared by all options gives the log-likelihoods a full
forward of prompt + option gives."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from loramgr.examples.reallab.evaluate import option_log_likelihoods


def _full_forward_scores(model, prompt, options):
    scores = []
    for option in options:
        ids = torch.tensor([prompt + option])
        logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
        scores.append(float(sum(logprobs[len(prompt) - 1 + t, token] for t, token in enumerate(option))))
    return scores


def test_shared_prompt_scores_equal_full_forwards():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    prompt = [5, 9, 11, 3, 7, 22, 41]
    options = [[12], [30, 31, 2], [8, 8]]  # unequal lengths: the batch is right-padded
    shared = option_log_likelihoods(model, prompt, options, pad_token_id=0)
    full = _full_forward_scores(model, prompt, options)
    assert len(shared) == 3
    for a, b in zip(shared, full):
        assert abs(a - b) < 1e-4, (shared, full)
    assert len(set(round(s, 3) for s in shared)) == 3  # the options really are told apart
