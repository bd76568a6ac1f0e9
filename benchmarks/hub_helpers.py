"""Shared by the remote benchmarks: a write token for a hub's database, and a timer."""

from __future__ import annotations

import time

from loramgr.hub.db.engine import Database
from loramgr.hub.tokens import TokenStore

MB = 1_000_000


def create_token(database_url: str) -> str:
    """A write token for the namespace ``bench``, stored in the hub's database."""
    database = Database(database_url)
    database.ensure_current()
    try:
        return TokenStore(database).create("bench", write=True).secret
    finally:
        database.dispose()


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
