"""The lab's two tiny base-model families and the LoRA target-module sets used on them.

``t5`` is a T5-type seq2seq model (LoraHub composed Flan-T5 modules); ``llama`` is a Llama-type
causal LM, so the causal path is exercised too. Sizes are chosen so that pre-training and a LoRA
each take seconds on two CPU cores, yet the models have room to learn every lab task.
"""

from __future__ import annotations

import torch

from .tokenizer import BOS_ID, EOS_ID, PAD_ID

FAMILIES = ("t5", "llama")
# The stable identifiers written into every adapter's `base_model_name_or_path`; the lab manifest
# records which folder holds each one.
BASE_IDS = {"t5": "loramgr-lab/t5-tiny", "llama": "loramgr-lab/llama-tiny"}

# Target-module sets, from attention-only to attention + feed-forward.
TARGETS = {
    "t5": {"qv": ("q", "v"), "qkvo": ("q", "k", "v", "o"), "ffn": ("wi", "wo"),
           "all": ("q", "k", "v", "o", "wi", "wo")},
    "llama": {"qv": ("q_proj", "v_proj"), "qkvo": ("q_proj", "k_proj", "v_proj", "o_proj"),
              "ffn": ("gate_proj", "up_proj", "down_proj"),
              "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")},
}

DIMS = {"d_model": 64, "d_ff": 256, "heads": 4, "layers": 2}


def build_base(family: str, vocab_size: int, seed: int):
    """A freshly initialised (untrained) base model of ``family``; weights depend only on ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    d, ff, heads, layers = DIMS["d_model"], DIMS["d_ff"], DIMS["heads"], DIMS["layers"]
    if family == "t5":
        config = T5Config(vocab_size=vocab_size, d_model=d, d_kv=d // heads, d_ff=ff, num_layers=layers,
                          num_decoder_layers=layers, num_heads=heads, dropout_rate=0.0,
                          relative_attention_num_buckets=16, relative_attention_max_distance=32,
                          pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID)
        model = T5ForConditionalGeneration(config)
    elif family == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=64,
                             pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=BOS_ID,
                             tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown lab family {family!r}; expected one of {FAMILIES}")
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    return model


def task_type(family: str) -> str:
    """PEFT's task type for ``family``."""
    return "SEQ_2_SEQ_LM" if family == "t5" else "CAUSAL_LM"
