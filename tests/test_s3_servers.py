"""The S3 test servers: SeaweedFS stores and checks SigV4 signatures, both servers honour
conditional writes the way the registry relies on, moto injects faults on demand."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.s3_servers import S3Server, start_seaweedfs


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_seaweedfs_round_trips_an_object_and_lists_it_at_once(seaweedfs, s3_bucket):
    s3 = seaweedfs.client()
    assert s3.meta.config.signature_version == "s3v4"
    assert urlparse(seaweedfs.endpoint_url).hostname == "127.0.0.1"
    body = b"adapter bytes \x00\xff" * 1000

    put = s3.put_object(Bucket=s3_bucket, Key="blobs/sha256/abc", Body=body)

    assert s3.get_object(Bucket=s3_bucket, Key="blobs/sha256/abc")["Body"].read() == body
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="blobs/")
    assert [o["Key"] for o in listed["Contents"]] == ["blobs/sha256/abc"]
    s3.delete_object(Bucket=s3_bucket, Key="blobs/sha256/abc")
    assert s3.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_seaweedfs_rejects_wrong_secret_unknown_key_and_anonymous_requests(seaweedfs, s3_bucket):
    wrong_secret = seaweedfs.client(secret_key="not-the-secret", retries={"total_max_attempts": 1})
    with pytest.raises(ClientError) as excinfo:
        wrong_secret.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    assert error_of(excinfo) == (403, "SignatureDoesNotMatch")

    anonymous = seaweedfs.client(signature_version=UNSIGNED, retries={"total_max_attempts": 1})
    with pytest.raises(ClientError) as excinfo:
        anonymous.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    assert error_of(excinfo)[0] == 403

    unknown = S3Server(seaweedfs.endpoint_url, "no-such-key", seaweedfs.secret_key)
    unknown = unknown.client(retries={"total_max_attempts": 1})
    with pytest.raises(ClientError) as excinfo:
        unknown.list_buckets()
    assert error_of(excinfo) == (403, "InvalidAccessKeyId")

    assert seaweedfs.client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_seaweedfs_does_not_create_a_bucket_on_upload(seaweedfs):
    with pytest.raises(ClientError) as excinfo:
        seaweedfs.client().put_object(Bucket="never-created-bucket", Key="k", Body=b"x")
    assert error_of(excinfo) == (404, "NoSuchBucket")


@pytest.mark.parametrize("server_name", ["seaweedfs", "moto_s3"])
def test_conditional_writes_fail_with_412_and_leave_the_object_unchanged(request, server_name):
    server = request.getfixturevalue(server_name)
    s3 = server.client(retries={"total_max_attempts": 1})
    bucket = server.create_bucket()
    first = s3.put_object(Bucket=bucket, Key="alias", Body=b"v1", IfNoneMatch="*")

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="alias", Body=b"v2", IfNoneMatch="*")
    assert error_of(excinfo) == (412, "PreconditionFailed")

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="alias", Body=b"v3", IfMatch=f'"{"0" * 32}"')
    assert error_of(excinfo) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="alias")["Body"].read() == b"v1"

    second = s3.put_object(Bucket=bucket, Key="alias", Body=b"v4", IfMatch=first["ETag"])
    assert second["ETag"] != first["ETag"]
    with pytest.raises(ClientError) as excinfo:  # the etag we just replaced is stale now
        s3.put_object(Bucket=bucket, Key="alias", Body=b"v5", IfMatch=first["ETag"])
    assert error_of(excinfo) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="alias")["Body"].read() == b"v4"


def test_moto_round_trips_an_object(moto_s3, moto_bucket):
    s3 = moto_s3.client()
    s3.put_object(Bucket=moto_bucket, Key="manifest.json", Body=b"{}")
    assert s3.get_object(Bucket=moto_bucket, Key="manifest.json")["Body"].read() == b"{}"
    listed = s3.list_objects_v2(Bucket=moto_bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["manifest.json"]


def test_moto_fails_the_next_matching_request_then_recovers(moto_s3, moto_bucket):
    s3 = moto_s3.client(retries={"total_max_attempts": 1})
    moto_s3.fail("PUT", "/aliases/", status=503, code="SlowDown")

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=moto_bucket, Key="aliases/prod", Body=b"v1")
    assert error_of(excinfo) == (503, "SlowDown")
    assert s3.list_objects_v2(Bucket=moto_bucket)["KeyCount"] == 0

    s3.put_object(Bucket=moto_bucket, Key="aliases/prod", Body=b"v1")
    assert s3.get_object(Bucket=moto_bucket, Key="aliases/prod")["Body"].read() == b"v1"


def test_moto_can_lose_the_answer_to_a_write_that_took_effect(moto_s3, moto_bucket):
    s3 = moto_s3.client(retries={"total_max_attempts": 1})
    moto_s3.fail("PUT", "/versions/", status=500, code="InternalError", after=True)

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=moto_bucket, Key="versions/1", Body=b"v1", IfNoneMatch="*")
    assert error_of(excinfo) == (500, "InternalError")

    assert s3.get_object(Bucket=moto_bucket, Key="versions/1")["Body"].read() == b"v1"
    with pytest.raises(ClientError) as excinfo:  # a retry by the writer now meets its own write
        s3.put_object(Bucket=moto_bucket, Key="versions/1", Body=b"v1", IfNoneMatch="*")
    assert error_of(excinfo) == (412, "PreconditionFailed")


def test_stopping_seaweedfs_ends_its_process_and_frees_its_port(tmp_path):
    server = start_seaweedfs(tmp_path)
    port = urlparse(server.endpoint_url).port
    server.stop()

    assert server.process.poll() is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    sockets = [Path(f"/tmp/seaweedfs-{k}-grpc-{p}.sock") for k, p in server.grpc_ports.items()]
    assert not any(path.exists() for path in sockets)
