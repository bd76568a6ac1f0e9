"""Errors of the composer; all derive from the hub's ``LoramgrError``."""

from __future__ import annotations

from loramgr.hub.errors import LoramgrError, error_table


class CompositionError(LoramgrError, ValueError):
    """Adapters or settings that cannot be combined as asked; the message says why."""

    code = "composition"
    http_status = 422


class IncompatibleAdapters(CompositionError):
    """Adapters that do not fit together (different base models, unequal shapes for lorahub)."""

    code = "incompatible_adapters"


class ExamplesError(CompositionError):
    """Few-shot examples that are missing, too few, or malformed."""

    code = "bad_examples"


class UnsupportedAdapter(CompositionError):
    """An adapter feature the composer cannot combine (DoRA, embeddings, modules_to_save)."""

    code = "unsupported_adapter"


# The composer's code -> class table (the hub's is ``loramgr.hub.errors.HUB_ERRORS``).
COMPOSER_ERRORS = error_table(CompositionError, IncompatibleAdapters, ExamplesError, UnsupportedAdapter)
