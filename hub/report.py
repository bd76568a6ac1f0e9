"""Pictures of a composition, drawn from its lineage: the weights as a bar chart and the
search's loss curve (each evaluation as a dot, the best so far as a line), as SVG written here
from the numbers. No plotting library and nothing fetched when the page is viewed, so a report
is one file that opens anywhere; the hub's web pages embed the same pictures.

The lineage is read in the shape ``Lineage.to_dict`` gives (``AdapterVersion.to_dict()["lineage"]``);
the search history is ``details["history"]``: one ``{"loss", "task_loss", "best"}`` per
evaluation, in order. Entries that are not numbers are skipped, never fatal: an old or partial
lineage still renders, with a line saying what is missing.
"""

from __future__ import annotations

import json
import math
import os
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Callable

from jinja2 import Environment
from markupsafe import Markup, escape

POSITIVE, NEGATIVE, DOT, BEST, AXIS, GRID = "#2f6db3", "#c0573a", "#7f95b8", "#d9480f", "#555", "#e3e6ea"
Href = Callable[[str], "str | None"]


def _number(value) -> float | None:
    """``value`` as a finite float, None for anything else (missing, text, inf, nan)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def weights_svg(sources: list[dict], *, href: Href | None = None) -> Markup:
    """A horizontal bar per source (``{"ref", "weight"}``), left of the zero line when negative.
    ``href(ref)`` gives the link of a source's label and bar (None: not linked)."""
    width, label_w, value_w, row = 720, 250, 80, 28
    weights = [_number(s.get("weight")) for s in sources]
    finite = [w for w in weights if w is not None] or [0.0]
    low, high = min(0.0, *finite), max(0.0, *finite)
    if high == low:
        high = low + 1.0
    left, right = label_w + 10, width - value_w

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * (right - left)

    height = row * len(sources) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart weights" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="weights of the sources">',
             f'<line x1="{x(0):.1f}" y1="4" x2="{x(0):.1f}" y2="{height - 24}" stroke="{AXIS}" stroke-width="1"/>']
    for index, (source, weight) in enumerate(zip(sources, weights)):
        ref = str(source.get("ref", "?"))
        top = 6 + index * row
        shown = ref if len(ref) <= 34 else ref[:33] + "\u2026"
        label = (f'<text x="{label_w}" y="{top + 17}" text-anchor="end" font-size="13" fill="#1a1a1a">'
                 f'<title>{escape(ref)}</title>{escape(shown)}</text>')
        if weight is None:
            bar = (f'<text x="{x(0) + 6:.1f}" y="{top + 17}" font-size="12" fill="{AXIS}">'
                   f'not a number ({escape(str(source.get("weight")))})</text>')
        else:
            x0, x1 = sorted((x(0), x(weight)))
            colour = POSITIVE if weight >= 0 else NEGATIVE
            bar = (f'<rect x="{x0:.1f}" y="{top + 4}" width="{max(x1 - x0, 1):.1f}" height="{row - 10}" '
                   f'fill="{colour}"><title>{escape(ref)}: {weight:+.4f}</title></rect>'
                   f'<text x="{right + 10}" y="{top + 17}" font-size="12" '
                   f'fill="#1a1a1a">{weight:+.3f}</text>')
        link = href(ref) if href else None
        if link:
            parts.append(f'<a href="{escape(link)}" class="source-link">{label}{bar}</a>')
        else:
            parts.append(label + bar)
    axis_y = height - 10
    for tick in nice_ticks(low, high, 6):
        parts.append(f'<text x="{x(tick):.1f}" y="{axis_y}" text-anchor="middle" font-size="11" '
                     f'fill="{AXIS}">{_fmt(tick)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def history_points(details: dict | None) -> list[tuple[int, float, float]]:
    """``(evaluation number, loss, best so far)`` for each usable entry of ``details["history"]``.
    ``best`` is recomputed from the losses when an entry lacks it."""
    history = (details or {}).get("history")
    if not isinstance(history, list):
        return []
    points, best = [], math.inf
    for number, entry in enumerate(history, start=1):
        loss = _number(entry.get("loss")) if isinstance(entry, dict) else None
        if loss is None:
            continue
        best = min(best, loss)
        recorded = _number(entry.get("best"))
        points.append((number, loss, recorded if recorded is not None else best))
    return points


def loss_curve_svg(points: list[tuple[int, float, float]]) -> Markup | None:
    """Each evaluation's loss as a dot and the best so far as a stepped line; None without points."""
    if not points:
        return None
    width, height, ml, mr, mt, mb = 720, 300, 64, 20, 28, 44
    evaluations = points[-1][0]
    values = [p[1] for p in points] + [p[2] for p in points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.06 or abs(high) * 0.05 or 0.5
    low, high = low - pad, high + pad

    def x(n: float) -> float:
        return ml + (n - 1) / max(1, evaluations - 1) * (width - ml - mr)

    def y(v: float) -> float:
        return mt + (high - v) / (high - low) * (height - mt - mb)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart loss" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="loss of each evaluation and best so far">']
    for tick in nice_ticks(low, high, 5):
        if low <= tick <= high:
            parts.append(f'<line x1="{ml}" y1="{y(tick):.1f}" x2="{width - mr}" y2="{y(tick):.1f}" stroke="{GRID}"/>'
                         f'<text x="{ml - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11" '
                         f'fill="{AXIS}">{_fmt(tick)}</text>')
    for tick in nice_ticks(1, max(2, evaluations), 8):
        if 1 <= tick <= evaluations and tick == int(tick):
            parts.append(f'<text x="{x(tick):.1f}" y="{height - mb + 16}" text-anchor="middle" font-size="11" '
                         f'fill="{AXIS}">{int(tick)}</text>')
    parts.append(f'<line x1="{ml}" y1="{height - mb}" x2="{width - mr}" y2="{height - mb}" stroke="{AXIS}"/>'
                 f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{height - mb}" stroke="{AXIS}"/>'
                 f'<text x="{(ml + width - mr) / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="12" '
                 f'fill="{AXIS}">evaluation</text>')
    for number, loss, _ in points:
        parts.append(f'<circle cx="{x(number):.1f}" cy="{y(loss):.1f}" r="3" fill="{DOT}" fill-opacity="0.75">'
                     f'<title>evaluation {number}: {loss:.5g}</title></circle>')
    path = []
    for index, (number, _, best) in enumerate(points):
        if index == 0:
            path.append(f"M{x(number):.1f},{y(best):.1f}")
        else:
            path.append(f"H{x(number):.1f}V{y(best):.1f}")
    parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{BEST}" stroke-width="2"/>')
    legend_x = width - mr - 230
    parts.append(f'<circle cx="{legend_x}" cy="12" r="3" fill="{DOT}"/>'
                 f'<text x="{legend_x + 8}" y="16" font-size="12" fill="#1a1a1a">each evaluation</text>'
                 f'<line x1="{legend_x + 112}" y1="12" x2="{legend_x + 132}" y2="12" stroke="{BEST}" stroke-width="2"/>'
                 f'<text x="{legend_x + 138}" y="16" font-size="12" fill="#1a1a1a">best so far</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def lineage_facts(lineage: dict) -> list[tuple[str, str]]:
    """The lineage's headline numbers as (label, text) rows."""
    score = _number(lineage.get("score"))
    return [("mode", str(lineage.get("mode") or "")), ("objective", str(lineage.get("objective") or "")),
            ("score", f"{score:.6g}" if score is not None else "not recorded"),
            ("seed", str(lineage.get("seed")) if lineage.get("seed") is not None else "not recorded"),
            ("examples digest", str(lineage.get("examples_digest") or "not recorded"))]


def detail_rows(details: dict | None) -> list[tuple[str, str]]:
    """The search's other settings (budget, optimizer, shots...) as text; the history is drawn instead."""
    rows = []
    for key, value in sorted((details or {}).items()):
        if key == "history":
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        rows.append((str(key), text if len(text) <= 300 else text[:299] + "\u2026"))
    return rows


def composition_pictures(lineage: dict, *, href: Href | None = None) -> dict:
    """What a page shows of a lineage: ``facts``, ``weights`` (SVG), ``curve`` (SVG or None),
    ``evaluations``, ``best`` and ``details``."""
    points = history_points(lineage.get("details"))
    sources = [s for s in lineage.get("sources") or [] if isinstance(s, dict)]
    return {"facts": lineage_facts(lineage), "weights": weights_svg(sources, href=href), "sources": sources,
            "curve": loss_curve_svg(points), "evaluations": len(points),
            "best": min((p[2] for p in points), default=None), "details": detail_rows(lineage.get("details"))}


_REPORT = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Composition {{ v.ref }}</title>
<style>
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1a1a1a;max-width:800px;margin:2em auto;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #e3e6ea}
table{border-collapse:collapse} td,th{text-align:left;padding:.15em 1.2em .15em 0;vertical-align:top}
th{color:#555;font-weight:500} code{font:13px ui-monospace,monospace;word-break:break-all}
.muted{color:#666} svg{max-width:100%;height:auto} a{color:#2f6db3}
</style></head><body>
<h1>{{ v.ref }}</h1>
<p class="muted">composed on {{ v.base_model }} for task {{ v.task }}{% if v.created_at %}, {{ v.created_at }}{% endif %}</p>
<table>{% for label, text in p.facts %}<tr><th>{{ label }}</th><td>{% if label == "examples digest" %}<code>{{ text }}</code>{% else %}{{ text }}{% endif %}</td></tr>{% endfor %}</table>
<h2>Weights of the sources ({{ p.sources|length }})</h2>
{% if p.sources %}{{ p.weights }}{% else %}<p>The lineage names no sources.</p>{% endif %}
<h2>Search</h2>
{% if p.curve %}<p class="muted">{{ p.evaluations }} evaluations; best loss {{ "%.6g"|format(p.best) }}.</p>{{ p.curve }}
{% else %}<p>No search history was recorded for this composition, so there is no loss curve.</p>{% endif %}
{% if p.details %}<h2>Settings</h2><table>{% for key, text in p.details %}<tr><th>{{ key }}</th><td><code>{{ text }}</code></td></tr>{% endfor %}</table>{% endif %}
<p class="muted">Written by loramgr {{ loramgr_version }}; digest <code>{{ v.digest }}</code>.</p>
</body></html>
""")


def render_composition_report(version, *, hub_url: str | None = None) -> str:
    """A self-contained HTML page of one composed version: facts, weights chart, loss curve.

    ``version`` is ``AdapterVersion.to_dict()`` (or an ``AdapterVersion``); its ``lineage`` is a
    ``Lineage.to_dict``-shaped dict. With ``hub_url`` (a team hub), each source links to its page
    there. Raises ``InvalidArgument`` when the version has no lineage.
    """
    from .errors import InvalidArgument

    data = version.to_dict() if hasattr(version, "to_dict") else dict(version)
    lineage = data.get("lineage")
    if not isinstance(lineage, dict):
        raise InvalidArgument(f"{data.get('ref', 'this version')} is not a composed version: "
                              "a report draws a composition's weights and search")
    href = (lambda ref: source_page_url(hub_url, ref)) if hub_url else None
    try:
        own_version = package_version("loramgr")
    except PackageNotFoundError:
        own_version = "?"
    view = {k: data.get(k, "") for k in ("ref", "base_model", "task", "created_at", "digest")}
    return _REPORT.render(v=view, p=composition_pictures(lineage, href=href), loramgr_version=own_version)


def source_page_url(hub_url: str, ref: str) -> str | None:
    """The web page of ``NS/NAME@N`` on the hub at ``hub_url``; None for a ref that does not parse."""
    from .refs import AdapterRef
    from .errors import LoramgrError

    try:
        parsed = AdapterRef.parse(ref)
    except LoramgrError:
        return None
    page = f"{hub_url.rstrip('/')}/adapters/{parsed.adapter.namespace}/{parsed.adapter.name}"
    return page + (f"?version={parsed.version}" if parsed.version is not None else "")


def write_composition_report(version, path, *, hub_url: str | None = None) -> Path:
    """Render ``render_composition_report(version, hub_url=...)`` into the file ``path``, atomically
    (a temp file beside it, then renamed), and return the path. Raises ``InvalidArgument`` for a
    version that is not composed or a folder that does not exist."""
    from .errors import InvalidArgument

    html = render_composition_report(version, hub_url=hub_url)
    target = Path(path)
    if target.is_dir():
        raise InvalidArgument(f"cannot write the report to {target}: it is a folder")
    if not target.parent.is_dir():
        raise InvalidArgument(f"cannot write the report to {target}: the folder {target.parent} does not exist")
    temp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        temp.write_text(html, encoding="utf-8")
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target
