"""Domain errors. The HTTP layer maps each class to a status code in one place."""

from __future__ import annotations


class LoraloopError(Exception):
    """Base of every error loraloop raises on purpose."""


class InvalidRequest(LoraloopError, ValueError):
    """The caller sent something malformed; the message says what to fix (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class InvalidName(InvalidRequest):
    """An adapter, alias or version reference that does not follow the naming rules."""


class NotFound(LoraloopError, LookupError):
    """An adapter, version, alias or record that does not exist (HTTP 404)."""


class Conflict(LoraloopError):
    """A compare-and-swap lost against a concurrent writer (HTTP 409)."""


class LeaseLost(Conflict):
    """A job runner wrote to a job it no longer holds (re-queued, claimed again or finished):
    it must stop working on it (HTTP 409)."""


class InvalidAdapter(LoraloopError, ValueError):
    """An adapter folder or artifact that cannot be used: bad config, pickle weights,
    a different base model, a rank or target module the engine does not allow (HTTP 422)."""


class IntegrityError(LoraloopError):
    """Stored bytes whose sha256 differs from the manifest (HTTP 502: the registry is broken)."""


class RegistryUnavailable(LoraloopError):
    """The registry backend cannot be reached (HTTP 503)."""


class StoreUnavailable(LoraloopError):
    """The store's database cannot be reached, or dropped the connection mid-transaction (it
    restarts, an administrator ended the session): nothing of that transaction was kept
    unless it had committed; retry, with the same Idempotency-Key (HTTP 503)."""


class TooLarge(LoraloopError):
    """A request over a configured size limit; the message names the limit (HTTP 413)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Unavailable(LoraloopError):
    """The server cannot take work now, e.g. while it shuts down; retry, another replica
    may answer (HTTP 503 with Retry-After)."""


class Overloaded(LoraloopError):
    """The engine's queue is full; retry later (HTTP 429)."""


class TimedOut(LoraloopError):
    """Work that ran past its configured time limit (HTTP 504)."""
