"""Sign-in for the web pages: a key with the right scope, exchanged once for a signed cookie.

The key is posted in a form body and never kept: the cookie holds only the key's *name* and an
expiry, signed with HMAC-SHA256. Every request re-checks that a key of that name still exists
with the scope the page needs, so removing a key signs its sessions out. Keys never appear in
URLs, so they never reach access logs or browser history. The cookie is HttpOnly and
SameSite=Strict (no cross-site form can post a vote with it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response

from core.settings import Scope, Settings
from service.auth import Authenticator
from service.rate_limit import take_token

COOKIE = "loraloop_session"


class Sessions:
    def __init__(self, settings: Settings):
        secret = settings.ui_session_secret
        self._secret = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
        self._seconds = settings.ui_session_hours * 3600

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue(self, response: Response, name: str, *, secure: bool) -> None:
        """Set the session cookie for the key called ``name``."""
        payload = json.dumps({"n": name, "e": int(time.time() + self._seconds)}).encode()
        value = base64.urlsafe_b64encode(payload).decode() + "." + self._sign(payload)
        response.set_cookie(
            COOKIE, value, max_age=int(self._seconds), httponly=True, samesite="strict",
            secure=secure, path="/ui",
        )

    def name(self, cookie: str | None) -> str | None:
        """The key name of a valid, unexpired cookie; None otherwise."""
        if not cookie or "." not in cookie:
            return None
        encoded, signature = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded.encode())
        except ValueError:
            return None
        # As bytes: compare_digest refuses str with non-ASCII characters (a forged cookie's).
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        data = json.loads(payload)
        return data["n"] if data.get("e", 0) > time.time() else None

    def seed(self, *parts: object) -> bytes:
        """A keyed hash of ``parts``: stable for this secret, unpredictable without it."""
        return hmac.new(self._secret, "\x00".join(map(str, parts)).encode(), hashlib.sha256).digest()


def get_sessions(request: Request) -> Sessions:
    return request.app.state.services.sessions


class SignInRequired(Exception):
    """Raised by a page dependency; the pages answer with a redirect to the sign-in form."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def page_caller(scope: Scope):
    """A dependency yielding the signed-in caller's name for a page that needs ``scope``."""

    async def dependency(request: Request) -> str:
        authenticator: Authenticator = request.app.state.authenticator
        if authenticator.open:  # no keys configured: loopback only, no sign-in
            caller = authenticator.caller(None, scope, request.client.host if request.client else None)
            take_token(request, caller, open_access=True)
            return caller
        name = get_sessions(request).name(request.cookies.get(COOKIE))
        if name is None:
            raise SignInRequired(request.url.path)
        try:
            caller = authenticator.named(name, scope)
        except HTTPException as error:
            if error.status_code == 401:
                raise SignInRequired(request.url.path) from None
            raise
        take_token(request, caller, open_access=False)
        return caller

    return Depends(dependency)


LabelerCaller = Annotated[str, page_caller("feedback")]
PageAdminCaller = Annotated[str, page_caller("admin")]
