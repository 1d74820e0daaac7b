"""The OpenAPI document says what the server does.

FastAPI documents every invalid input as a 422 ``HTTPValidationError``; loraloop answers 400 in
its one error shape (service.errors). FastAPI knows nothing of the errors the app adds around
the routes either. ``install_openapi`` rewrites each operation's responses once, from what the
operation has:

    parameters or a body -> 400             a request body   -> 413
    a path parameter     -> 404             an API key       -> 401, 403, 429, 503

(keyed operations are the ones that take work: the per-caller rate limit answers 429 and a
draining server 503, both with ``Retry-After``). A route declares the rest itself with
``errors(...)``, ``event_stream(...)`` or ``json_lines(...)``: the errors only it can answer, a
server-sent event stream, a JSON-lines download.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter

REF = "#/components/schemas/{model}"
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
WWW_AUTHENTICATE = {"description": "Bearer", "schema": {"type": "string"}}

DESCRIPTIONS = {
    400: "Invalid request: the message says what to fix, `param` names the parameter.",
    401: "Missing or unknown API key.",
    403: "The API key lacks the scope this operation needs (or a server without keys refuses a "
    "caller on another machine).",
    404: "No such adapter, version, alias, model, job, queue, snapshot or completion.",
    409: "The operation conflicts with the current state: a concurrent writer won, an "
    "idempotency key was used for something else, or the resource is busy or finished.",
    413: "The request body is over a size limit; the message names the setting.",
    422: "An adapter that cannot be used here: a malformed upload, a base it does not fit, or a "
    "policy adapter where a reward adapter is needed (or the reverse).",
    429: "Too many requests: the caller's rate limit or the engine's queue is full; retry after "
    "`Retry-After` seconds.",
    502: "The registry returned an artifact that fails its checksum.",
    503: "The server is shutting down, or a backend it needs is unreachable; retry after "
    "`Retry-After` seconds.",
    504: "The request ran past the request timeout.",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, OpenAI's shape (built by service.errors.error_body)."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route for the errors only it answers (the common ones are added to
    every operation by install_openapi)."""
    return {status: _error(status) for status in statuses}


def event_stream(
    *data: type[Any], sentinel: str | None = "[DONE]", extra: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose 200 is also ``text/event-stream``: one event per item, its
    ``data`` a JSON value of one of the ``data`` types (or the ``sentinel`` that ends it)."""
    payload: dict[str, Any] = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": _union(data),
    }
    if sentinel is not None:
        payload = {"anyOf": [{"const": sentinel}, payload]}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": payload,
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    media = {"itemSchema": event, **(extra or {})}
    return {200: {"content": {"text/event-stream": media}}}


def json_lines(*rows: type[Any], media_type: str = "application/x-ndjson") -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose 200 is JSON lines, one of the ``rows`` types per line
    (declare ``response_class=StreamingResponse`` so no JSON body is documented too)."""
    return {200: {"content": {media_type: {"schema": {"type": "string"}, "itemSchema": _union(rows)}}}}


def install_openapi(app: FastAPI) -> None:
    """Serve the honest document at /openapi.json (built on first use, then kept)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = honest(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def honest(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (FastAPI's) with the server's real error responses."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operation in _operations(document):
        responses = operation["responses"]
        generated = responses.get("422", {}).get("content", {}).get("application/json", {})
        if generated.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
            del responses["422"]
        for status in _common_errors(operation):
            responses.setdefault(str(status), _error(status))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _hoist_definitions(document, schemas)
    schemas.update(_components(ErrorResponse))
    return document


def _common_errors(operation: dict[str, Any]) -> list[int]:
    parameters = operation.get("parameters", [])
    statuses = []
    if parameters or "requestBody" in operation:
        statuses.append(400)
    if any(p["in"] == "path" for p in parameters):
        statuses.append(404)
    if "requestBody" in operation:
        statuses.append(413)
    if operation.get("security"):
        statuses += [401, 403, 429, 503]
    return sorted(statuses)


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": RETRY_AFTER}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
    return response


def _union(types: tuple[type[Any], ...]) -> dict[str, Any]:
    """A schema of any one of ``types``, by reference to their components; the definitions
    ride along under ``$defs`` until ``honest`` moves them to the components."""
    # As the items of a list, a model is a $ref to its definition rather than inlined.
    union: Any = functools.reduce(operator.or_, types)
    listed = TypeAdapter(list[union]).json_schema(mode="serialization", ref_template=REF)
    return {**listed["items"], "$defs": listed.get("$defs", {})}


def _components(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization", ref_template=REF)
    return {**schema.pop("$defs", {}), model.__name__: schema}


def _hoist_definitions(node: Any, schemas: dict[str, Any]) -> None:
    """Move every ``$defs`` a route's hand-written schema carries into the components."""
    if isinstance(node, dict):
        for name, schema in node.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        for value in node.values():
            _hoist_definitions(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_definitions(value, schemas)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for path in document.get("paths", {}).values() for op in path.values()]
