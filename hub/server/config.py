"""How a team hub behaves, beyond the registry ``Settings``: access and limits."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """``public_read``: reads need no token (writes always do). ``max_upload_bytes``: the
    largest blob one PUT may carry (413 above it). ``max_json_bytes``: the largest JSON body.
    ``idle_timeout_s``: a client that sends no request bytes, or reads no response bytes, for
    this long is cut off (408 when no response has started)."""

    public_read: bool = True
    max_upload_bytes: int = 4096 * MB
    max_json_bytes: int = 1 * MB
    idle_timeout_s: float = 60.0

    def __post_init__(self):
        if self.max_upload_bytes < 1 or self.max_json_bytes < 1 or self.idle_timeout_s <= 0:
            from ..errors import InvalidArgument

            raise InvalidArgument("upload limits and timeouts must be positive")
