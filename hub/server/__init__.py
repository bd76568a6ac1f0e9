"""The team hub: the registry service over HTTP (an ASGI app served by uvicorn).

``create_app(settings, config)`` builds the app; ``serve(...)`` runs it. The routes are in
``routes`` (metadata, JSON) and ``blob_routes`` (blob bytes, streamed); ``auth`` checks bearer
tokens, ``limits`` enforces body sizes and idle timeouts, ``errors`` renders every error as one
JSON shape, and ``openapi`` describes it all at ``/openapi.json``.
"""

from .app import create_app, serve
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve"]
