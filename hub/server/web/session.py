"""Who is looking at a page, and the login that lets a browser read a private hub.

A page needs what the API needs to read: nothing on a public-read hub, a valid token on a
private-read one. A browser cannot send a bearer header, so the login form takes a token and
keeps it in a cookie that scripts cannot read (HttpOnly) and that other sites' requests do not
carry (SameSite=Strict); logging out clears it. The token is checked against the token table
on every request, so revoking it ends the session at once.
"""

from __future__ import annotations

import functools
from urllib.parse import parse_qs, urlsplit

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...errors import Forbidden, InvalidArgument, LoramgrError, PayloadTooLarge, Unauthorized
from ...tokens import TokenInfo
from .. import auth
from .render import page

FORM_BYTES = 8 * 1024


async def reader(request: Request) -> TokenInfo | None:
    """The token a page request reads with (bearer header or login cookie), None on a public hub
    without one. Raises ``Unauthorized`` on a private-read hub without a valid token."""
    token = await auth.presented_token(request)
    if token is None:
        token = await auth.cookie_token(request)
    if token is None and not request.app.state.config.public_read:
        raise Unauthorized("this hub needs a token to read: log in with one")
    return token


def local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (a login never sends anyone elsewhere)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def check_same_origin(request: Request) -> None:
    """Refuse a form posted from another site's page. Raises ``Forbidden``."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("this form can only be sent from this hub's own pages")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form. Raises ``PayloadTooLarge``, ``InvalidArgument``."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            raise PayloadTooLarge(f"the form is larger than {FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidArgument("the form is not UTF-8") from None
    return {k: v[0] for k, v in fields.items()}


def login_page(request: Request, *, next_path: str, message: str | None = None, status_code: int = 200) -> Response:
    response = page(request, "login.html", {"next_path": next_path, "message": message, "title": "Log in",
                                          "login_form_shown": True},
                    status_code=status_code)
    if message and request.cookies.get(auth.SESSION_COOKIE):
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def login_needed(request: Request) -> Response:
    """The answer to a page asked for without a valid token: 401 with the login form."""
    stale = bool(request.cookies.get(auth.SESSION_COOKIE))
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    message = ("The token you logged in with is unknown or was revoked: log in with another one." if stale
               else "This hub is private: log in with a token to see its adapters.")
    return login_page(request, next_path=local_path(target), message=message, status_code=401)


def web_page(handler):
    """Render a ``LoramgrError`` as a page (a login form for 401), never as JSON or a traceback."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Unauthorized:
            return login_needed(request)
        except LoramgrError as error:
            return page(request, "error.html", {"title": "Error", "error": error, "session": None},
                        status_code=error.http_status)

    return wrapped


async def login_form(request: Request) -> Response:
    return login_page(request, next_path=local_path(request.query_params.get("next")))


@web_page
async def login(request: Request) -> Response:
    check_same_origin(request)
    fields = await read_form(request)
    secret, next_path = fields.get("token", "").strip(), local_path(fields.get("next"))
    token = await to_thread.run_sync(request.app.state.tokens.find, secret) if secret else None
    if token is None or not token.active:
        reason = "Enter a token." if not secret else "That token is unknown or was revoked."
        return login_page(request, next_path=next_path, message=reason, status_code=401)
    response = RedirectResponse(next_path, status_code=303)
    # No max-age: the cookie lasts as long as the browser session.
    response.set_cookie(auth.SESSION_COOKIE, secret, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@web_page
async def logout(request: Request) -> Response:
    check_same_origin(request)
    response = RedirectResponse("/login" if not request.app.state.config.public_read else "/", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
