"""S3 faults injected with moto's server: throttling is retried, lost responses are
recognised, and an outage surfaces as RegistryUnavailable without corrupting anything."""

from __future__ import annotations

import pytest

from core.errors import RegistryUnavailable
from core.registry import Registry, open_registry
from tests.settings_variants import s3_settings


@pytest.fixture
def moto_registry(settings, base_info, moto_s3, moto_bucket) -> Registry:
    return open_registry(s3_settings(settings, moto_s3, moto_bucket, s3_max_attempts=3), base_info)


def test_throttling_is_retried_transparently(moto_registry: Registry, moto_s3, adapter_dir):
    moto_s3.fail("PUT", "/versions/", status=503, code="SlowDown", times=2)
    assert moto_registry.publish(adapter_dir, "summarize").version == 1


def test_a_lost_response_to_the_manifest_write_does_not_double_publish(
    moto_registry: Registry, moto_s3, adapter_dir
):
    # The manifest lands but its 200 is lost; the retry then fails If-None-Match with 412.
    moto_s3.fail("PUT", "/versions/1.json", status=500, code="InternalError", after=True)
    assert moto_registry.publish(adapter_dir, "summarize").version == 1
    assert moto_registry.list_versions("summarize") == [1]


def test_a_lost_response_to_an_alias_move_is_recognised(moto_registry: Registry, moto_s3, new_adapter):
    moto_registry.publish(new_adapter(seed=1), "summarize")
    moto_registry.publish(new_adapter(seed=2), "summarize")
    moto_registry.set_alias("summarize", "production", 1)
    moto_s3.fail("PUT", "/aliases/production.json", status=500, code="InternalError", after=True)
    moto_registry.set_alias("summarize", "production", 2, expected=1)
    assert moto_registry.aliases("summarize") == {"production": 2}


def test_an_outage_fails_cleanly_and_leaves_no_version(moto_registry: Registry, moto_s3, adapter_dir):
    moto_s3.fail("PUT", "/versions/", status=503, code="ServiceUnavailable", times=3)
    with pytest.raises(RegistryUnavailable, match="ServiceUnavailable"):
        moto_registry.publish(adapter_dir, "summarize")
    assert moto_registry.list_versions("summarize") == []
    assert moto_registry.publish(adapter_dir, "summarize").version == 1


def test_a_move_without_an_expectation_retries_after_losing_the_etag_race(
    moto_registry: Registry, moto_s3, new_adapter
):
    moto_registry.publish(new_adapter(seed=1), "summarize")
    moto_registry.publish(new_adapter(seed=2), "summarize")
    moto_registry.set_alias("summarize", "candidate", 1)
    # S3's answer to the loser of a conditional write; a retry reads the new ETag and lands.
    moto_s3.fail("PUT", "/aliases/candidate.json", status=412, code="PreconditionFailed", times=2)
    moto_registry.set_alias("summarize", "candidate", 2)
    assert moto_registry.aliases("summarize") == {"candidate": 2}
