"""Prompt formats: how an example's input is shown to the model.

One named setting used alike to train modules, to score examples in ``compose`` and to
evaluate, because an instruct model scores the same text very differently with and without its
chat template:

- ``plain``: the input text as it is (with the tokenizer's own special tokens, e.g. Llama's BOS);
- ``chat``: the input as one user turn of the tokenizer's chat template, followed by the
  template's assistant header; the answer is then the assistant's reply, ended by the
  tokenizer's EOS (for chat models, the end-of-turn token).

In-context examples (``shots``) become earlier turns: user/assistant pairs in ``chat``, and
``input`` + ``output`` blocks separated by blank lines in ``plain``.
"""

from __future__ import annotations

from typing import Sequence

from .choices import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS
from .errors import CompositionError


def check_prompt_format(prompt_format: str, tokenizer=None) -> str:
    """``prompt_format`` if it is known (and, for ``chat``, the tokenizer has a template).

    Raises ``CompositionError`` naming the choices, or saying the tokenizer has no template.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise CompositionError(f"unknown prompt format {prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}")
    if prompt_format == "chat" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise CompositionError("prompt format 'chat' needs a tokenizer with a chat template; this one has none "
                               "(use --prompt-format plain)")
    return prompt_format


def render_prompt(tokenizer, text: str, prompt_format: str = DEFAULT_PROMPT_FORMAT, *,
                  shots: Sequence[tuple[str, str]] = ()) -> str:
    """The text the model reads before its answer, for ``text`` (and in-context ``shots``,
    ``(input, output)`` pairs shown before it).

    ``plain`` returns a string to tokenize with the tokenizer's special tokens; ``chat`` returns
    the rendered template, whose special tokens are already in the text (tokenize it with
    ``add_special_tokens=False``; ``prompt_token_ids`` does the right thing for both).
    """
    check_prompt_format(prompt_format, tokenizer)
    if prompt_format == "plain":
        return "".join(f"{i}{o}\n\n" for i, o in shots) + text
    messages = []
    for shot_input, shot_output in shots:
        messages += [{"role": "user", "content": shot_input}, {"role": "assistant", "content": shot_output}]
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_token_ids(tokenizer, text: str, prompt_format: str = DEFAULT_PROMPT_FORMAT, *,
                     shots: Sequence[tuple[str, str]] = ()) -> list[int]:
    """Token ids of ``render_prompt(...)``: special tokens added once, by the tokenizer or the template."""
    rendered = render_prompt(tokenizer, text, prompt_format, shots=shots)
    return tokenizer(rendered, add_special_tokens=prompt_format == "plain")["input_ids"]
