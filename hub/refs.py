"""Adapter names and references: ``NS/NAME``, ``NS/NAME@VERSION`` and ``NS/NAME:TAG``.

Names become folder names and URL path segments, so they are checked strictly here, once, at
the boundary: no ``..``, no extra ``/``, no control characters, nothing a shell or a file
system would read specially.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .bounds import MAX_INT32, is_ascii_number
from .errors import InvalidName

_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$")
LATEST = "latest"


def check_part(value: str, what: str) -> str:
    """Return ``value`` if it is a valid namespace, name or tag, else raise ``InvalidName``."""
    if not isinstance(value, str) or not _PART.fullmatch(value) or ".." in value:
        shown = value.encode("unicode_escape").decode() if isinstance(value, str) else repr(value)
        raise InvalidName(
            f"invalid {what} {_shown(shown)}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, and no '..'"
        )
    return value


def check_new_tag(tag: str) -> str:
    """A tag to create: ``check_part``, and not only digits. In a revision (the Hugging Face API,
    web pages) digits always name a version number, so a tag ``2`` could never be reached there.
    Tags made of digits that already exist still resolve as ``NS/NAME:2``. Raises ``InvalidName``."""
    check_part(tag, "tag")
    if tag.isascii() and tag.isdigit():
        raise InvalidName(f"invalid tag {tag!r}: a tag may not be only digits, which name a version number "
                          f"(use e.g. v{tag})")
    return tag


def _shown(value) -> str:
    text = repr(value) if len(repr(value)) <= 120 else repr(value)[:117] + "..."
    return text


@dataclass(frozen=True)
class AdapterName:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> "AdapterName":
        """Parse ``NS/NAME``; raises ``InvalidName``."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 2:
            raise InvalidName(f"invalid adapter name {_shown(text)}: expected NAMESPACE/NAME, e.g. acme/sentiment")
        return cls(check_part(parts[0], "namespace"), check_part(parts[1], "name"))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class AdapterRef:
    """An adapter and which of its versions: a number, a tag, or (neither) the ``latest`` tag."""

    adapter: AdapterName
    version: int | None = None
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> "AdapterRef":
        """Parse ``NS/NAME``, ``NS/NAME@N`` or ``NS/NAME:TAG``; raises ``InvalidName``."""
        if not isinstance(text, str):
            raise InvalidName(f"invalid reference {_shown(text)}")
        if "@" in text:
            name, _, version = text.partition("@")
            if not is_ascii_number(version) or int(version) < 1:
                raise InvalidName(f"invalid version in {_shown(text)}: expected a number from 1 to {MAX_INT32}, "
                                  f"e.g. {name[:140]}@3")
            return cls(AdapterName.parse(name), version=int(version))
        if ":" in text:
            name, _, tag = text.partition(":")
            return cls(AdapterName.parse(name), tag=check_part(tag, "tag"))
        return cls(AdapterName.parse(text))

    @property
    def selector(self) -> str:
        return f"@{self.version}" if self.version else f":{self.tag or LATEST}"

    def __str__(self) -> str:
        return f"{self.adapter}{self.selector}"
