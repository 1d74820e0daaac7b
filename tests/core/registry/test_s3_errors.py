"""An S3 registry that cannot be reached fails fast with an error naming the endpoint."""

from __future__ import annotations

import socket
import time

import pytest

from core.errors import RegistryUnavailable
from core.registry import open_registry
from tests.settings_variants import s3_settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    region = "us-east-1"
    access_key = "key"
    secret_key = "secret"

    def __init__(self, endpoint_url: str):
        self.endpoint_url = endpoint_url


def test_an_unreachable_endpoint_is_a_clear_bounded_error(settings, base_info):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    unreachable = s3_settings(settings, _Server(endpoint), "bucket", s3_connect_timeout=1, s3_max_attempts=2)
    registry = open_registry(unreachable, base_info)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=endpoint):
        registry.resolve("summarize@production")
    assert time.monotonic() - started < 15


def test_an_endpoint_that_never_answers_times_out(settings, base_info):
    # A listening socket that never accepts: connects queue, reads never return.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        hanging = s3_settings(
            settings, _Server(endpoint), "bucket", s3_connect_timeout=1, s3_read_timeout=1, s3_max_attempts=1
        )
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=endpoint):
            open_registry(hanging, base_info).list_adapters()
        assert time.monotonic() - started < 15


def test_wrong_credentials_are_reported(settings, base_info, seaweedfs, s3_bucket):
    wrong = s3_settings(settings, seaweedfs, s3_bucket, s3_secret_access_key="not-the-secret")
    with pytest.raises(RegistryUnavailable, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        open_registry(wrong, base_info).list_adapters()


def test_a_missing_bucket_is_reported(settings, base_info, seaweedfs):
    registry = open_registry(s3_settings(settings, seaweedfs, "no-such-bucket-here"), base_info)
    with pytest.raises(RegistryUnavailable, match="NoSuchBucket"):
        registry.list_adapters()
