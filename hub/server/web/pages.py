"""The pages: the adapter list with search and filters, and one adapter with its versions,
card, files, usage and, for composed versions, the lineage. Each handler reads through the
same ``Registry`` methods as the JSON API, in a worker thread.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ...errors import AdapterNotFound, InvalidArgument, LoramgrError
from ...refs import AdapterName
from ...report import composition_pictures, source_page_url
from ..routes import call, query_int, registry
from .render import CARD_SHOWN_BYTES, card_html, page
from .session import reader, web_page

PAGE_SIZE = 25
MAX_PAGE = 10_000
VERSIONS_SHOWN = 100
SOURCES = ("pushed", "composed", "imported")
FILTERS = ("q", "base", "task", "min_rank", "max_rank", "source")


def page_number(request: Request) -> int:
    number = query_int(request, "page")
    number = 1 if number is None else number
    if not 1 <= number <= MAX_PAGE:
        raise InvalidArgument(f"page must be between 1 and {MAX_PAGE}: narrow the search instead")
    return number


@web_page
async def home(request: Request) -> Response:
    session = await reader(request)
    params = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    if params["source"] and params["source"] not in SOURCES:
        raise InvalidArgument(f"source must be one of {', '.join(SOURCES)}, not {params['source']!r}")
    number = page_number(request)
    reg = registry(request)

    def load():
        found = reg.search(base=params["base"] or None, task=params["task"] or None,
                           min_rank=query_int(request, "min_rank"), max_rank=query_int(request, "max_rank"),
                           query=params["q"] or None, source=params["source"] or None,
                           limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE)
        return found, reg.facets()

    found, facets = await call(load)
    return page(request, "home.html", {
        "title": "Adapters", "session": session, "params": params, "versions": found[:PAGE_SIZE],
        "page": number, "has_next": len(found) > PAGE_SIZE, "facets": facets, "sources": SOURCES,
        "filtered": any(params.values())})


def version_ref(name: str, selector: str) -> str:
    """The ref of ``?version=``: a number, a tag, or (empty) the latest."""
    if not selector:
        return name
    return f"{name}@{selector}" if selector.isdigit() else f"{name}:{selector}"


def read_card(reg, version) -> str | None:
    """The text of the version's README.md, None without one, when it is too big to show, or
    when its blob cannot be read (the page still shows; `loramgr verify` reports the blob)."""
    card = next((f for f in version.files if f.name == "README.md"), None)
    if card is None or card.size > CARD_SHOWN_BYTES:
        return None
    try:
        with reg.blobs.open(card.digest) as handle:
            return handle.read(CARD_SHOWN_BYTES + 1).decode("utf-8", errors="replace")
    except (OSError, LoramgrError):
        return None


def usage(version, hub_url: str, public_read: bool) -> dict:
    """The copy-paste lines that fetch this version from this hub."""
    ref, repo, revision = version.ref, version.adapter, str(version.number)
    token_env = "" if public_read else " LORAMGR_TOKEN=lmt_..."
    token_arg = "" if public_read else ', token="lmt_..."'
    model_class = "AutoModelForSeq2SeqLM" if version.task_type == "SEQ_2_SEQ_LM" else "AutoModelForCausalLM"
    return {
        "loramgr": f"LORAMGR_REMOTE={hub_url}{token_env} loramgr pull {ref} -o ./{version.name}",
        "snapshot_download": (f"from huggingface_hub import snapshot_download\n"
                              f'path = snapshot_download("{repo}", revision="{revision}", '
                              f'endpoint="{hub_url}"{token_arg})'),
        "peft": (f"import os\n"
                 f'os.environ["HF_ENDPOINT"] = "{hub_url}"  # before transformers and peft are imported\n'
                 + ("" if public_read else 'os.environ["HF_TOKEN"] = "lmt_..."\n')
                 + f"from transformers import {model_class}\nfrom peft import PeftModel\n"
                 f'base = {model_class}.from_pretrained("{version.base_model}")\n'
                 f'model = PeftModel.from_pretrained(base, "{repo}", revision="{revision}")'),
    }


@web_page
async def adapter(request: Request) -> Response:
    session = await reader(request)
    name = str(AdapterName.parse(f"{request.path_params['namespace']}/{request.path_params['name']}"))
    selector = request.query_params.get("version", "").strip()
    reg = registry(request)

    def load():
        versions = reg.versions(name)
        try:
            current = reg.show(version_ref(name, selector))
        except AdapterNotFound:
            raise AdapterNotFound(f"{name} has no version {selector!r}: the adapter's page lists its versions") from None
        return versions, current, read_card(reg, current), reg.compositions_using(name)

    versions, current, card, used_in = await call(load)
    hub_url = str(request.base_url).rstrip("/")
    lineage = None
    if current.lineage is not None:
        lineage = composition_pictures(current.to_dict()["lineage"], href=lambda ref: source_page_url("", ref))
    return page(request, "adapter.html", {
        "title": name, "session": session, "name": name, "version": current,
        "versions": versions[:VERSIONS_SHOWN], "more_versions": max(0, len(versions) - VERSIONS_SHOWN),
        "card": card_html(card) if card is not None else None,
        "card_missing": card is None and any(f.name == "README.md" for f in current.files),
        "usage": usage(current, hub_url, request.app.state.config.public_read),
        "lineage": lineage, "used_in": used_in, "page_of": lambda ref: source_page_url("", ref)})
