"""Templates and model cards, rendered safely.

Every template is autoescaped: a value from the registry (a name, a description, a task) is
text, never markup. The only markup that reaches a page unescaped is what this package builds
itself: the SVG pictures (``hub.report``, which escapes the text it draws) and a model card
rendered by markdown-it with raw HTML turned off, so a card's ``<script>`` or ``onerror=``
comes out as visible text, and links with a ``javascript:`` URL are not made into links.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import HTMLResponse

from ...errors import InvalidArgument
from ...hf_card import split_card

HERE = Path(__file__).parent
# Larger cards are not shown inline (the file is still listed and downloadable).
CARD_SHOWN_BYTES = 512 * 1024

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def human_size(size: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def short_time(iso: str) -> str:
    """``2026-01-31 12:00 UTC`` from the registry's ISO times."""
    return iso[:16].replace("T", " ") + " UTC" if len(iso) >= 16 else iso


def card_html(text: str) -> Markup:
    """The card's Markdown body as HTML (its YAML metadata block left out); raw HTML in it is escaped."""
    try:
        _, body = split_card(text)
    except InvalidArgument:
        body = text  # a malformed metadata block is shown as written
    return Markup(_markdown.render(body))


def query_string(params: dict, **changes) -> str:
    """``?a=1&b=2`` of ``params`` with ``changes`` applied; empty values left out."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else "?"


environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
environment.filters.update(human_size=human_size, short_time=short_time)
environment.globals.update(query_string=query_string)

SECURITY_HEADERS = {
    # Nothing but this hub's own stylesheet and inline SVG: even a bug in escaping could not
    # run a script or load anything from elsewhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page(request, template: str, context: dict, *, status_code: int = 200, headers: dict | None = None
         ) -> HTMLResponse:
    """One rendered page with the security headers; never cached by shared caches."""
    config = request.app.state.config
    session = context.pop("session", None)
    html = environment.get_template(template).render(request_path=request.url.path, public_read=config.public_read,
                                                     session=session, **context)
    cache = "no-cache" if config.public_read else "no-store"
    return HTMLResponse(html, status_code=status_code,
                        headers={**SECURITY_HEADERS, "Cache-Control": cache, **(headers or {})})
