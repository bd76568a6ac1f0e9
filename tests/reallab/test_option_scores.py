"""Option scoring with the prompts batched (left-padded) and their cache shared by all options
gives the log-likelihoods a full forward of each prompt + option gives."""

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


def test_batched_prompts_with_a_shared_cache_score_as_full_forwards():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    # Prompts of unequal lengths (left padding) with unequal numbers of options of unequal lengths.
    prompts = [[5, 9, 11, 3, 7, 22, 41], [17, 4], [33, 2, 9, 9, 60]]
    options = [[[12], [30, 31, 2], [8, 8]], [[1, 2], [3]], [[40], [41], [42], [43, 44]]]
    shared = option_log_likelihoods(model, prompts, options, pad_token_id=0)
    assert [len(s) for s in shared] == [3, 2, 4]
    for prompt, row, scores in zip(prompts, options, shared):
        full = _full_forward_scores(model, prompt, row)
        for a, b in zip(scores, full):
            assert abs(a - b) < 1e-4, (scores, full)
    assert len(set(round(s, 3) for s in shared[0])) == 3  # the options really are told apart
