"""A vLLM LoRA resolver plugin: vLLM asks for model ``NS/NAME``, ``NS/NAME@N`` or ``NS/NAME:TAG``,
the plugin answers with a verified local snapshot of that version from a loramgr hub.

Enable it (``pip install 'loramgr[vllm]'`` installs the entry point)::

    VLLM_PLUGINS=loramgr VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    LORAMGR_REMOTE=http://hub:8000 LORAMGR_TOKEN=... \
    vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora --max-lora-rank 16

The entry point (group ``vllm.general_plugins``, name ``loramgr``) calls ``register``, which adds
``LoramgrResolver`` to vLLM's ``LoRAResolverRegistry`` (``vllm/lora/resolver.py``). vLLM consults
resolvers only with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, for a requested model name it has not
loaded yet, calling ``await resolver.resolve_lora(base_model_name, lora_name)`` with the served
model (``--model``) as ``base_model_name``, and then keeps the adapter under that name. So a
moved tag is picked up the next time vLLM resolves the name: after
``POST /v1/unload_lora_adapter {"lora_name": "acme/sql:prod"}``, or in a new server.

The hub is the one ``LORAMGR_*`` configures (``LORAMGR_REMOTE`` / ``LORAMGR_TOKEN`` for a team
hub, else ``LORAMGR_HOME``); it is used through its public client only. An adapter whose base
model is not the served one is refused with a log line saying both; ``LORAMGR_BASE_MODEL``
(comma-separated) names the hub base ids the served model also answers to, e.g. when vLLM
serves a local copy at ``/models/smollm2``.

vLLM is imported here and nowhere else in loramgr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from loramgr.hub.errors import InvalidName, LoramgrError
from loramgr.hub.refs import AdapterRef
from loramgr.hub.settings import Settings

RESOLVER_NAME = "loramgr"
BASE_MODEL_VARIABLE = "LORAMGR_BASE_MODEL"
# A child of vLLM's logger, so the lines come out with vLLM's own formatting.
logger = logging.getLogger("vllm.loramgr")


class LoramgrResolver(LoRAResolver):
    """Resolves hub references to ``LoRARequest``s for local snapshots.

    ``settings``: the hub (default: from ``LORAMGR_*``); ``base_aliases``: other names of the
    served model, accepted as an adapter's base model besides vLLM's ``base_model_name``.
    """

    def __init__(self, settings: Settings | None = None, *, base_aliases: tuple[str, ...] = ()):
        self.settings = settings or Settings.load()
        self.base_aliases = tuple(alias for alias in base_aliases if alias)
        self._registry = None
        self._lock = threading.Lock()  # vLLM may resolve several names at once: one pull at a time
        self._verified: set[str] = set()  # version digests whose snapshot files were re-hashed

    def registry(self):
        if self._registry is None:
            from loramgr.hub.connect import open_registry

            self._registry = open_registry(self.settings)
        return self._registry

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        """vLLM's resolver interface; the hub is asked in a worker thread (it does blocking I/O)."""
        return await asyncio.to_thread(self.resolve, base_model_name, lora_name)

    def resolve(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        """The request for ``lora_name``, or None (with a log line) when this hub does not serve it:
        not a loramgr reference, no such version, another base model, or a snapshot that fails
        its digests. Never raises for what a client can ask."""
        try:
            ref = AdapterRef.parse(lora_name)
        except InvalidName:
            return None  # not a hub reference: leave the name to other resolvers
        with self._lock:
            try:
                return self._resolve(ref, base_model_name, lora_name)
            except LoramgrError as exc:
                logger.warning("loramgr: cannot resolve %s: %s", lora_name, exc)
                return None

    def _resolve(self, ref: AdapterRef, base_model_name: str, lora_name: str) -> LoRARequest | None:
        hub = self.registry()
        try:
            version = hub.show(str(ref))  # a tag is looked up now, every time: a moved tag is followed
        except LookupError:
            logger.info("loramgr: %s is not in the hub at %s", lora_name, self._where())
            return None
        accepted = (base_model_name, *self.base_aliases)
        if version.base_model not in accepted:
            logger.warning("loramgr: refusing %s (%s): it is an adapter for %s, but this server runs %s; set %s "
                           "if that is the same model under another name", lora_name, version.ref,
                           version.base_model, base_model_name, BASE_MODEL_VARIABLE)
            return None
        path = hub.pull(version.ref)
        self._check_snapshot(path, version)
        logger.info("loramgr: serving %s as %s from %s", lora_name, version.ref, path)
        return LoRARequest(lora_name=lora_name, lora_int_id=_int_id(version.digest), lora_path=str(path),
                           base_model_name=version.base_model)

    def _check_snapshot(self, path, version) -> None:
        """Re-hash the snapshot's files once per version: what vLLM loads is what was pushed."""
        if version.digest in self._verified:
            return
        from loramgr.hub.digests import sha256_file
        from loramgr.hub.errors import IntegrityError

        for file in version.files:
            if sha256_file(path / file.name) != file.digest:
                raise IntegrityError(f"snapshot file {path / file.name} does not match its sha256; "
                                     f"remove {path} to pull it again")
        self._verified.add(version.digest)

    def _where(self) -> str:
        return self.settings.remote or str(self.settings.home)


def _int_id(digest: str) -> int:
    # vLLM replaces it with its own counter when it loads the adapter; a positive id per version
    # keeps the request valid wherever it is used as it is.
    return int(digest[:8], 16) % (2**31 - 1) + 1


def register() -> None:
    """The ``vllm.general_plugins`` entry point: add the resolver to vLLM's registry.

    Configuration is read here, when vLLM loads its plugins, not at import time."""
    aliases = tuple(name.strip() for name in os.environ.get(BASE_MODEL_VARIABLE, "").split(","))
    resolver = LoramgrResolver(Settings.load(), base_aliases=aliases)
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, resolver)
    logger.info("loramgr: LoRA resolver registered for the hub at %s", resolver._where())
