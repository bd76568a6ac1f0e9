"""Bearer tokens on requests: who may read, who may write where.

- Reads: anyone on a public-read hub; any valid token on a private-read one.
- Writes (push, tag, rm): a write token for the adapter's namespace (or for ``*``).
- Blob uploads: any write token (blobs are content-addressed and belong to no namespace until
  a commit references them; the commit is checked against the namespace).
- gc and verify of the whole store: a write token for ``*`` (maintenance over every
  namespace; re-hashing everything is too heavy to leave to anonymous callers). Verifying one
  version is a read.

A token that is presented but unknown or revoked is always 401, even where none is needed: a
client should learn its token is dead, not have it silently ignored.

The web pages' login keeps the token in a cookie (``SESSION_COOKIE``); reads accept it, so a
logged-in browser can download files, but writes never do: a cookie rides along on requests
that other sites' pages make, a bearer header never does.
"""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request

from ..errors import Forbidden, Unauthorized
from ..tokens import ALL_NAMESPACES, TokenInfo, TokenStore

SESSION_COOKIE = "loramgr_token"
CREATE_HINT = "create one on the hub with `loramgr token create --namespace NS --write` and set LORAMGR_TOKEN"


async def presented_token(request: Request) -> TokenInfo | None:
    """The active token the request carries, None without one. Raises ``Unauthorized`` for a
    malformed header, an unknown token or a revoked one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    tokens: TokenStore = request.app.state.tokens
    token = await to_thread.run_sync(tokens.find, secret.strip())
    if token is None:
        raise Unauthorized(f"unknown token: {CREATE_HINT}")
    if not token.active:
        raise Unauthorized(f"token {token.id} was revoked: {CREATE_HINT}")
    return token


async def cookie_token(request: Request) -> TokenInfo | None:
    """The active token of the web login cookie; None without one, or for one unknown or revoked
    (the pages then ask to log in again)."""
    secret = request.cookies.get(SESSION_COOKIE, "").strip()
    if not secret:
        return None
    tokens: TokenStore = request.app.state.tokens
    token = await to_thread.run_sync(tokens.find, secret)
    return token if token is not None and token.active else None


async def require_read(request: Request) -> TokenInfo | None:
    """Raises ``Unauthorized`` when the hub is private-read and the request has no valid token
    (a bearer header, or the web login cookie)."""
    token = await presented_token(request)
    if token is None:
        token = await cookie_token(request)
    if token is None and not request.app.state.config.public_read:
        raise Unauthorized(f"this hub needs a token to read: {CREATE_HINT}")
    return token


async def require_write(request: Request, namespace: str | None) -> TokenInfo:
    """A write token for ``namespace`` (None: any namespace will do). Raises ``Unauthorized``
    without a valid token, ``Forbidden`` when it is read-only or for another namespace."""
    token = await presented_token(request)
    if token is None:
        raise Unauthorized(f"writing needs a token: {CREATE_HINT}")
    if not token.can_write:
        raise Forbidden(f"token {token.id} is read-only: writing needs a token created with --write")
    if namespace is not None and token.namespace not in (namespace, ALL_NAMESPACES):
        raise Forbidden(f"token {token.id} may write to namespace {token.namespace!r}, not {namespace!r}")
    return token
