"""Tiny real models, tokenizers and PEFT LoRA adapters for tests, built offline in seconds.

Nothing here is a fake: the models are real transformers models built from small configs, the
tokenizer is a real BPE trained with `tokenizers`, the adapters are saved by PEFT itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "abcdefghijklmnopqrstuvwxyz 0123456789",
    "reverse sort copy upper lower count first last",
] * 4
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]


def make_tokenizer(vocab_size: int = 96):
    """A BPE tokenizer trained on a fixed corpus; pad=0, eos=1, unk=2, bos=3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:0])
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3)
    return LlamaForCausalLM(config).eval()


def tiny_t5(vocab_size: int, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config).eval()


def save_base_model(kind: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny ``llama`` or ``t5`` model with its tokenizer, loadable by ``from_pretrained``."""
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    model = tiny_llama(vocab, seed) if kind == "llama" else tiny_t5(vocab, seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_lora(base_dir: Path, out_dir: Path, *, r: int = 4, alpha: int = 8, targets=None, seed: int = 0,
              train_steps: int = 0, init_scale: float = 0.5, **config_kw) -> Path:
    """Save a PEFT LoRA adapter for the model in ``base_dir``.

    The B factors start random (``init_scale``) rather than zero so that every adapter has a
    non-trivial delta; ``train_steps`` then trains it briefly on random tokens with Adam.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    is_t5 = AutoConfig.from_pretrained(base_dir).model_type == "t5"
    auto = AutoModelForSeq2SeqLM if is_t5 else AutoModelForCausalLM
    model = auto.from_pretrained(base_dir)
    targets = list(targets or (["q", "v"] if is_t5 else ["q_proj", "v_proj"]))
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                        task_type="SEQ_2_SEQ_LM" if is_t5 else "CAUSAL_LM", **config_kw)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * init_scale)
    if train_steps:
        optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        ids = torch.randint(4, model.config.vocab_size, (4, 12), generator=generator)
        for _ in range(train_steps):
            loss = peft_model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


def write_examples(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in rows))
    return path
