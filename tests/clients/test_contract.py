"""The client and the server stay in step: the committed OpenAPI snapshot equals what the
server serves, every client model matches its schema component (field names and required
fields), and request bodies the SDK builds validate against the schema."""

from __future__ import annotations

import inspect
import json
from typing import Any

import jsonschema
import pytest
from loraloop_client._models import Model, RequestModel
from loraloop_client.resources import adapters, feedback, jobs, rewards
from pydantic import BaseModel

from tests.clients.openapi_snapshot import REFRESH, SNAPSHOT, current_schema, render

SNAPSHOT_SCHEMA: dict[str, Any] = json.loads(SNAPSHOT.read_text())


def client_models() -> list[type[BaseModel]]:
    found = []
    for module in (adapters, feedback, rewards, jobs):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, (Model, RequestModel)) and cls.__module__ == module.__name__:
                found.append(cls)
    return found


def component(cls: type[BaseModel], request: bool) -> dict[str, Any] | None:
    """The model's schema; FastAPI splits a model used both ways into X-Input / X-Output."""
    schemas = SNAPSHOT_SCHEMA["components"]["schemas"]
    name = cls.component
    return schemas.get(name) or schemas.get(f"{name}-{'Input' if request else 'Output'}")


def test_the_snapshot_is_what_the_server_serves():
    assert render(current_schema()) == SNAPSHOT.read_text(), (
        f"The server's OpenAPI schema changed: refresh the snapshot with `{REFRESH}`, "
        "then run tests/clients/test_contract.py to see which client models must follow."
    )


@pytest.mark.parametrize("cls", client_models(), ids=lambda cls: cls.__name__)
def test_client_models_match_their_server_schema(cls: type[BaseModel]):
    request = issubclass(cls, RequestModel)
    schema = component(cls, request)
    assert schema is not None, f"{cls.__name__}: no component {cls.component!r} in the snapshot"
    properties = set(schema.get("properties", {}))
    server_required = set(schema.get("required", []))
    fields = set(cls.model_fields)
    client_required = {name for name, f in cls.model_fields.items() if f.is_required()}

    assert fields <= properties, f"{cls.__name__} has fields the server does not know: {fields - properties}"
    if request:
        # Every field the server requires, the client must send.
        assert server_required <= client_required, f"{cls.__name__} misses {server_required - client_required}"
    else:
        # The client may only insist on what the server always sends.
        assert client_required <= server_required, f"{cls.__name__} requires {client_required - server_required}"


def validate(body: Any, name: str) -> None:
    jsonschema.validate(body, {**SNAPSHOT_SCHEMA, "$ref": f"#/components/schemas/{name}"},
                        cls=jsonschema.Draft202012Validator)


def test_the_request_bodies_the_sdk_builds_are_valid():
    post = feedback._post_args("demo", "tie", "P", ["a", "b"], None, "me", "model", {"k": 1}, None)
    validate(post["json"], "FeedbackCreateRequest")
    validate(adapters._alias_body(3, 2, False), "AliasUpdate")
    validate(adapters._alias_body(1, None, True), "AliasUpdate")
    validate(adapters.PinRequest(pinned=False).model_dump(), "PinRequest")
    validate(rewards.RewardRequest(model="judge", prompt="P", completions=["a"]).model_dump(), "RewardRequest")
    validate(feedback.SnapshotCreate(use_case="demo").model_dump(), "SnapshotCreate")
    validate(jobs._submit_args("round", "demo", {"algorithm": "dpo"}, 2, None)["json"], "JobCreate")
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validate({"use_case": "demo", "choice": 2}, "FeedbackCreateRequest")
