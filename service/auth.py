"""API keys with scopes. ``Authorization: Bearer <key>``, as OpenAI clients send it.

With no keys configured the server is open to loopback clients only, unless
``allow_open_access`` says otherwise. The app enforces this on every request, whatever server
runs it (``uvicorn --factory service.app:create_app --host 0.0.0.0`` included); ``check_bind``
also refuses to start ``python -m service`` on such an address, so the mistake shows at once.
Keys are compared in constant time and never logged; a caller is logged by its key's name.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.settings import ApiKey, Scope, Settings
from service.rate_limit import take_token

log = logging.getLogger(__name__)

OPEN_CALLER = "anonymous"
# Declares the bearer scheme on every operation that needs a key, in the OpenAPI document. It
# checks nothing (auto_error=False): the Authenticator does, and lets keyless loopback callers in.
BEARER = HTTPBearer(scheme_name="bearer", description="An API key.", auto_error=False)
BearerDeclared = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


class Authenticator:
    def __init__(self, keys: list[ApiKey], *, allow_open_access: bool = False):
        self._keys = [(k.key.get_secret_value().encode(), k) for k in keys]
        self._allow_open_access = allow_open_access

    @property
    def open(self) -> bool:
        return not self._keys

    def caller(self, authorization: str | None, scope: Scope | None, client_host: str | None) -> str:
        """The name of the key allowed to use ``scope`` (None: any valid key); HTTPException
        401/403 otherwise.
        ``client_host`` is the peer's address: an open API answers only loopback peers."""
        if self.open:
            if not self._allow_open_access and not is_loopback(client_host or ""):
                raise HTTPException(
                    403,
                    "this server has no API keys, so it answers only clients on its own machine: "
                    "set LORALOOP_API_KEYS (or LORALOOP_ALLOW_OPEN_ACCESS=true to serve an open API)",
                )
            return OPEN_CALLER
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                401, "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = token.strip().encode()
        match = None
        for secret, key in self._keys:  # no early exit: timing does not reveal which key
            if hmac.compare_digest(secret, presented):
                match = key
        if match is None:
            raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        return self._allowed(match, scope)

    def named(self, name: str, scope: Scope) -> str:
        """``name`` if a key of that name still exists and may use ``scope`` (a signed-in page
        session names its key; removing the key ends the session); HTTPException otherwise."""
        for _, key in self._keys:
            if key.name == name:
                return self._allowed(key, scope)
        raise HTTPException(401, "the API key of this session no longer exists: sign in again")

    @staticmethod
    def _allowed(key: ApiKey, scope: Scope | None) -> str:
        """``scope`` None: any valid key will do (reading jobs)."""
        if scope is not None and scope not in key.scopes and "admin" not in key.scopes:
            raise HTTPException(403, f"API key {key.name!r} lacks the '{scope}' scope")
        return key.name


def require(scope: Scope | None):
    """A dependency that authenticates the request for ``scope``, counts it against the caller's
    rate limit, and yields the caller's name. ``async`` though it never awaits: FastAPI runs a
    plain ``def`` dependency on a worker thread, a thread hop per request for a few
    microseconds of work (the same holds for the services' ``get_*`` dependencies)."""

    async def dependency(request: Request, _: BearerDeclared) -> str:
        authenticator: Authenticator = request.app.state.authenticator
        client_host = request.client.host if request.client else None
        caller = authenticator.caller(request.headers.get("authorization"), scope, client_host)
        take_token(request, caller, authenticator.open)
        return caller

    return Depends(dependency)


InferCaller = Annotated[str, require("infer")]
FeedbackCaller = Annotated[str, require("feedback")]
AdminCaller = Annotated[str, require("admin")]
AnyCaller = Annotated[str, require(None)]  # any valid key, whatever its scopes


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve an open (keyless) API beyond loopback unless explicitly allowed."""
    if settings.api_keys:
        return
    if is_loopback(settings.host):
        log.warning("no API keys configured: the API is open to anyone on this machine")
        return
    if not settings.allow_open_access:
        raise SystemExit(
            f"refusing to bind {settings.host} with no API keys: set LORALOOP_API_KEYS, bind "
            "127.0.0.1, or set LORALOOP_ALLOW_OPEN_ACCESS=true to serve an open API"
        )
    log.warning("no API keys configured and bound to %s: the API is open to the network", settings.host)
