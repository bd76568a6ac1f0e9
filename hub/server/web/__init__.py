"""Web pages for people, served by ``loramgr serve`` beside the JSON and Hugging Face APIs:
server-rendered HTML (Jinja2, autoescaped), one small stylesheet, no JavaScript.

- ``GET /``: the adapters, newest first, with a search box and filters, paginated.
- ``GET /adapters/{ns}/{name}[?version=N|TAG]``: one adapter: versions, card, files, usage,
  and for a composed version its lineage (weights, loss curve) and what was composed from it.
- ``GET|POST /login``, ``POST /logout``: keep a token in an HttpOnly, SameSite=Strict cookie,
  for hubs served with ``--private-read``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import pages, session
from .render import HERE

_STYLESHEET = (HERE / "static" / "web.css").read_bytes()


async def stylesheet(_request: Request) -> Response:
    return Response(_STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


ROUTES = [
    Route("/", pages.home, methods=["GET"]),
    Route("/adapters/{namespace}/{name}", pages.adapter, methods=["GET"]),
    Route("/login", session.login_form, methods=["GET"]),
    Route("/login", session.login, methods=["POST"]),
    Route("/logout", session.logout, methods=["POST"]),
    Route("/static/web.css", stylesheet, methods=["GET"]),
]
