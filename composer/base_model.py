"""Loading a base model and its tokenizer, seq2seq or causal, from a Hub id or a local folder."""

from __future__ import annotations

import torch

from .errors import CompositionError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base_model(model_id: str, *, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) for ``model_id``: ``AutoModelForSeq2SeqLM`` when the config is an
    encoder-decoder, else ``AutoModelForCausalLM``; in eval mode on ``device``.

    The lookup is the ordinary transformers one (local folder, cache, or the Hugging Face Hub).
    Raises ``CompositionError`` when it cannot be loaded, naming ``--model``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_id)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(model_id, dtype=dtype) if dtype else auto.from_pretrained(model_id)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompositionError(f"cannot load the base model {model_id!r} ({first_line}); "
                               "pass --model with a local folder or a Hub id that is cached") from None
    return model.to(device or default_device()).eval(), tokenizer
