"""GET /v1/models and GET /v1/adapters come from a catalog of the registry: no registry request
per call, stray objects skipped with one warning, writes by others seen within a poll and
writes through the server at once. The registry is on moto's S3 server, to inject an outage."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from core.base.folders import base_model_info
from core.registry import Registry, open_registry
from core.settings import Settings
from tests.adapters import make_adapter, publish_test_adapters
from tests.api_keys import ADMIN_KEY, API_KEYS, auth
from tests.service_thread import serve
from tests.settings_variants import s3_settings

POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def s3_server_settings(tmp_path_factory, tiny_llama_dir, moto_s3) -> Settings:
    data = tmp_path_factory.mktemp("listings")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=POLL_SECONDS, api_keys=API_KEYS,
    )
    settings = s3_settings(settings, moto_s3, moto_s3.create_bucket(), s3_max_attempts=1)
    publish_test_adapters(settings, data)
    return settings


@pytest.fixture(scope="module")
def listings_client(s3_server_settings: Settings) -> Iterator[httpx.Client]:
    with serve(s3_server_settings) as url, httpx.Client(base_url=url, headers=auth(ADMIN_KEY), timeout=60) as c:
        yield c


@pytest.fixture
def outside(s3_server_settings: Settings, moto_s3) -> Iterator[Registry]:
    """The same registry as another process (a trainer) sees it."""
    yield open_registry(s3_server_settings, base_model_info(s3_server_settings))
    moto_s3.clear_faults()


def names(client: httpx.Client) -> tuple[set[str], set[str]]:
    adapters = client.get("/v1/adapters")
    models = client.get("/v1/models")
    assert adapters.status_code == 200 and models.status_code == 200, (adapters.text, models.text)
    return {a["name"] for a in adapters.json()["data"]}, {m["id"] for m in models.json()["data"]}


def test_listings_make_no_registry_request(listings_client, outside, moto_s3, s3_server_settings):
    assert names(listings_client)[0] >= {"summarize", "support", "judge"}
    bucket = s3_server_settings.registry_url.removeprefix("s3://").split("/")[0]
    moto_s3.fail("GET", bucket, status=503, code="ServiceUnavailable", times=10**6)
    moto_s3.fail("HEAD", bucket, status=503, code="ServiceUnavailable", times=10**6)
    for _ in range(3):  # every registry read fails now; listings are served from memory
        adapters, models = names(listings_client)
        assert {"summarize", "support", "judge"} <= adapters
        assert {"summarize", "summarize@production", "support"} <= models


def test_stray_objects_are_skipped_with_one_warning_each(
    listings_client, outside, moto_s3, s3_server_settings, caplog
):
    caplog.set_level(logging.WARNING, logger="core.registry.catalog")
    s3 = moto_s3.client()
    bucket, prefix = s3_server_settings.registry_url.removeprefix("s3://").split("/", 1)
    strays = [f"{prefix}/adapters/README.md", f"{prefix}/adapters/Upper/versions/1.json",
              f"{prefix}/adapters/summarize/notes.txt"]
    for key in strays:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not an adapter")
    for version in (1, 1):  # writes through the server refresh the catalog at once
        r = listings_client.put("/v1/adapters/summarize/aliases/stray-check", json={"version": version})
        assert r.status_code == 200, r.text
        adapters, models = names(listings_client)
        assert "Upper" not in adapters and "README.md" not in adapters
        assert "summarize@stray-check" in models
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in strays:
        relative = key.removeprefix(f"{prefix}/")
        assert sum(relative in message for message in warnings) == 1, warnings


def test_writes_by_another_process_are_listed_within_a_poll(
    listings_client, outside: Registry, tmp_path, tiny_llama_dir, wait_for
):
    manifest = outside.publish(make_adapter(tiny_llama_dir, tmp_path / "fresh", rank=4, seed=21), "fresh")
    outside.set_alias("fresh", "production", manifest.version)
    wait_for(lambda: "fresh@production" in names(listings_client)[1], 10 + 10 * POLL_SECONDS)
    assert "fresh" in names(listings_client)[0]
