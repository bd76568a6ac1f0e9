"""The lab's tokenizer: one token per character, and one per task keyword (``rev:``).

Character tokens make every transduction a token-level one (a BPE merge such as ``ab`` would
make "reverse" a different problem for every merge); a single keyword token lets a tiny model
see the task in one position. Trained offline with `tokenizers` (a WordLevel vocabulary over the
lab corpus) and wrapped as a `transformers.PreTrainedTokenizerFast` saved with each base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]
PAD_ID, EOS_ID, UNK_ID, BOS_ID = range(4)
# A keyword is letters/digits closed by a colon; anything else is one character per token.
TOKEN_PATTERN = r"[a-z0-9]+:|."


def train_tokenizer(corpus: Iterable[str]):
    """A character + keyword tokenizer over ``corpus``; every encoding ends with ``</s>``.

    The vocabulary order is a pure function of the corpus (frequency, then the token itself), so
    the same corpus always gives the same ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()  # tokens are characters: join them without spaces
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1, show_progress=False)
    tok.train_from_iterator(sorted(set(corpus)), trainer)
    # T5 ends inputs and targets with </s>; the causal format (see `train.encode_causal`) reuses
    # that </s> as the separator between input and output.
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>", clean_up_tokenization_spaces=False)


def save_tokenizer(tokenizer, folder: Path) -> Path:
    """Save ``tokenizer`` under the class name that transformers 4 and 5 both load
    (``PreTrainedTokenizerFast``; version 5 alone would write its own ``TokenizersBackend``)."""
    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(folder)
