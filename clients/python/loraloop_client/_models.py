"""The base of every response and request model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A server object. Unknown fields are kept (``model_extra``), so a newer server does not
    break an older client.

    ``component`` names the server's OpenAPI schema the model mirrors (checked by the
    contract test in the server's repository).
    """

    model_config = ConfigDict(extra="allow")
    component: ClassVar[str | None] = None


class RequestModel(BaseModel):
    """A request body: unknown fields are refused here, before a round trip."""

    model_config = ConfigDict(extra="forbid")
    component: ClassVar[str | None] = None
