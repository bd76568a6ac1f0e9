"""Build the hub's ASGI app over one ``Registry``, and serve it with uvicorn."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..registry import Registry
from ..settings import Settings
from ..tokens import TokenStore
from . import blob_routes, hf_api, routes, web
from .config import ServerConfig
from .errors import EXCEPTION_HANDLERS
from .limits import IdleTimeoutMiddleware

log = logging.getLogger("loramgr.server")


def create_app(settings: Settings, config: ServerConfig | None = None, *, registry: Registry | None = None
               ) -> Starlette:
    """The hub app for the local registry ``settings`` describe (never a remote one: the
    server *is* the remote). Opening it migrates an empty database; raises what ``Registry``
    raises (``DatabaseBehind``, ``DatabaseError``)."""
    config = config or ServerConfig()
    registry = registry or Registry(settings.with_(remote=None, token=None))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            registry.close()

    app = Starlette(routes=[*routes.ROUTES, *blob_routes.ROUTES, *web.ROUTES, *hf_api.ROUTES],  # HF API last: /{ns}/{name}/...
                    exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(IdleTimeoutMiddleware, seconds=config.idle_timeout_s)],
                    lifespan=lifespan)
    app.state.registry = registry
    app.state.tokens = TokenStore(registry.db)
    app.state.config = config
    return app


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None,
          access_log: bool = True) -> None:
    """Serve the hub until interrupted (blocking)."""
    import uvicorn

    config = config or ServerConfig()
    app = create_app(settings, config)
    log.info("serving %s (%s reads) at http://%s:%d", settings.home, "public" if config.public_read else "token",
             host, port)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info",
                # A stop waits this long for transfers in flight, then cuts them (a client
                # resumes or retries).
                timeout_keep_alive=15, timeout_graceful_shutdown=10,
                server_header=False)
