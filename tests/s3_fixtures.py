"""S3 fixtures over real HTTP servers (see tests/s3_servers.py); conftest does ``import *``.

    seaweedfs    session   SeaweedFSServer: weed mini on 127.0.0.1, SigV4 signatures checked
    moto_s3      session   MotoServer: moto on 127.0.0.1, faults via moto_s3.fail(...)
    s3_bucket    function  name of a new, empty bucket on seaweedfs
    moto_bucket  function  name of a new, empty bucket on moto_s3; clears faults afterwards

Every server has endpoint_url, access_key, secret_key, region, client() and create_bucket().
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3_servers import MotoServer, SeaweedFSServer, start_moto, start_seaweedfs

__all__ = ["seaweedfs", "moto_s3", "s3_bucket", "moto_bucket"]


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFSServer]:
    """One weed mini for the session; its data and weed.log live under pytest's basetemp."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoServer]:
    """One moto server for the session (state is shared: use a fresh bucket per test)."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFSServer) -> str:
    return seaweedfs.create_bucket()


@pytest.fixture
def moto_bucket(moto_s3: MotoServer) -> Iterator[str]:
    yield moto_s3.create_bucket()
    moto_s3.clear_faults()
