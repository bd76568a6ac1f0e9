"""Bearer tokens of the team hub (``loramgr serve``).

A token is scoped to one namespace (or ``*``: every namespace) and reads, or reads and writes.
Only the sha256 of its secret is stored: the secret is shown once, when it is created, and a
leaked database does not leak working tokens. Revoking keeps the row (and its description) so
``loramgr token ls`` still shows what existed.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from .db.engine import Database
from .db.models import Token
from .digests import sha256_bytes
from .errors import InvalidArgument
from .refs import check_part

ALL_NAMESPACES = "*"
SECRET_PREFIX = "lmt_"


def hash_secret(secret: str) -> str:
    return sha256_bytes(secret)


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret or hash."""

    id: int
    namespace: str
    can_write: bool
    description: str | None
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows_write(self, namespace: str) -> bool:
        return self.active and self.can_write and self.namespace in (namespace, ALL_NAMESPACES)

    def to_dict(self) -> dict:
        return {**asdict(self), "active": self.active}


@dataclass(frozen=True)
class NewToken:
    """A token just created, with the secret that is shown this once."""

    token: TokenInfo
    secret: str

    def to_dict(self) -> dict:
        return {**self.token.to_dict(), "secret": self.secret}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="seconds")


def _info(row: Token) -> TokenInfo:
    return TokenInfo(id=row.id, namespace=row.namespace, can_write=bool(row.can_write),
                     description=row.description, created_at=_iso(row.created_at), revoked_at=_iso(row.revoked_at))


class TokenStore:
    """The ``tokens`` table of one metadata store."""

    def __init__(self, database: Database):
        self.db = database

    def create(self, namespace: str, *, write: bool = False, description: str | None = None) -> NewToken:
        """A new token for ``namespace`` (``*`` for every namespace). Raises ``InvalidName``."""
        if namespace != ALL_NAMESPACES:
            check_part(namespace, "namespace")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        with self.db.writing() as session:
            row = Token(token_hash=hash_secret(secret), namespace=namespace, can_write=write,
                        description=description)
            session.add(row)
            session.flush()
            return NewToken(_info(row), secret)

    def revoke(self, token_id: int) -> TokenInfo:
        """Revoke a token now (revoking twice is fine). Raises ``InvalidArgument`` for an unknown id."""
        with self.db.writing() as session:
            row = session.get(Token, token_id)
            if row is None:
                raise InvalidArgument(f"no token with id {token_id}: `loramgr token ls` lists them")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(timezone.utc)
                session.flush()
            return _info(row)

    def list(self) -> list[TokenInfo]:
        with self.db.reading() as session:
            return [_info(row) for row in session.scalars(select(Token).order_by(Token.id)).all()]

    def find(self, secret: str) -> TokenInfo | None:
        """The token whose secret this is (revoked ones included), or None."""
        with self.db.reading() as session:
            row = session.scalar(select(Token).where(Token.token_hash == hash_secret(secret)))
            return _info(row) if row is not None else None
