"""Schemathesis over the OpenAPI document, against a real uvicorn server of the app: every
operation, with an admin key, a bounded number of examples each. Every response must be no 5xx
(and come within the request timeout), with a status code, content type and body the document
declares; an operation that needs a key must refuse a request without one.

Generated values hit the server's real adapters, jobs, queues and snapshots part of the time
(hooks below), so the fuzzer reaches past the 404s. Reproduce a failure with the curl command
schemathesis prints, against ``python -m service`` with the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.config import SchemathesisConfig

from core.settings import Settings
from tests.adapters import publish_test_adapters
from tests.api_keys import ADMIN_KEY, API_KEYS, auth
from tests.clients.openapi_snapshot import current_schema
from tests.service_thread import serve

MAX_EXAMPLES = 15  # per operation and phase; 33 operations take about two minutes on 2 cores
MAX_NEW_TOKENS, MAX_N = 8, 2  # the server's limits: each generation stays short
REQUEST_TIMEOUT = 30  # seconds; longer is a hang (the server's own timeout is 20 s)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir) -> Settings:
    data = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, api_keys=API_KEYS, start_worker=False,
        # Small generations keep each request short whatever max_tokens and n the fuzzer picks.
        max_new_tokens=MAX_NEW_TOKENS, max_n=MAX_N, request_timeout_seconds=20,
    )
    publish_test_adapters(settings, data)
    return settings


# Names and ids on the server, by path parameter name; filled when the server starts.
REAL: dict[str, list[str]] = {}
# The `model` a request names, per path: the base, a policy adapter, the reward adapter.
MODELS = {
    "/v1/completions": ["base", "summarize", "support@production"],
    "/v1/chat/completions": ["base", "summarize", "support@production"],
    "/v1/rewards": ["judge", "judge@production"],
}

# The document the server serves (a test below checks that it does); loaded at collection, so
# pytest lists one test per operation.
schema = schemathesis.openapi.from_dict(
    current_schema(),
    config=SchemathesisConfig.from_dict({
        "generation": {"deterministic": True, "database": "none", "allow-x00": False},
        "max-stream-events": 64,
    }),
)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Part of the time, path parameters name an adapter, job, queue or snapshot that exists."""
    real = {name: st.sampled_from(REAL[name]) for name in path_parameters or {} if name in REAL}
    if not real:
        return st.just(path_parameters)
    generated = {name: st.just(value) for name, value in path_parameters.items()}
    return st.one_of(st.just(path_parameters), st.fixed_dictionaries({**generated, **real}))


@schema.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    """Part of the time, a request names a model the server serves, within its limits."""
    models = MODELS.get(context.operation.path)
    if not models or not isinstance(body, dict) or "model" not in body:
        return st.just(body)
    return st.one_of(st.just(body), st.sampled_from(models).map(lambda model: servable(body, model)))


def servable(body: dict[str, Any], model: str) -> dict[str, Any]:
    """``body`` for ``model``, inside the server's limits and without the fields whose rules
    the schema cannot say (the vocabulary, at most 4 stop sequences; their own tests cover
    them), so the engine runs the generated sampling parameters."""
    body = {name: value for name, value in body.items() if name not in UNSAID} | {"model": model}
    if "prompt" in body and not (isinstance(body["prompt"], str) and body["prompt"]):
        body["prompt"] = "Hello"
    for name, limit in (("max_tokens", MAX_NEW_TOKENS), ("max_completion_tokens", MAX_NEW_TOKENS), ("n", MAX_N)):
        if isinstance(body.get(name), int) and body[name] > limit:
            body[name] = limit
    return body


UNSAID = ("stop", "suffix", "best_of", "logit_bias")


@pytest.fixture(scope="module")
def fuzz_url(fuzz_settings: Settings) -> Iterator[str]:
    with serve(fuzz_settings) as url:
        REAL.update(create_things(url))
        yield url


def create_things(base_url: str) -> dict[str, list[str]]:
    """A feedback row, a job, a queue and a snapshot; the names and ids path parameters take."""
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=60) as client:

        def created(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = client.post(path, json=body)
            assert response.status_code == 201, response.text
            return response.json()

        created("/v1/feedback", {"use_case": "summarize", "prompt": "P", "candidates": ["a", "b"], "choice": 0})
        return {
            "name": ["summarize", "support", "judge"],
            "ref": ["summarize", "summarize@production", "support@1", "judge"],
            "alias": ["production", "candidate"],
            "job_id": [created("/v1/jobs", {"kind": "dpo", "use_case": "summarize"})["id"]],
            "queue_id": [created("/v1/labeling/queues", {"use_case": "summarize"})["id"]],
            "snapshot_id": [created("/v1/feedback/snapshots", {"use_case": "summarize"})["id"]],
        }


def test_the_fuzzed_document_is_the_one_served(fuzz_url: str):
    assert httpx.get(f"{fuzz_url}/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case, fuzz_url: str):
    case.call_and_validate(
        base_url=fuzz_url, headers=auth(ADMIN_KEY), timeout=REQUEST_TIMEOUT, checks=CHECKS
    )
