"""ObjectStore on S3 or any S3-compatible server (AWS, MinIO, R2, Ceph, SeaweedFS), via boto3.

Concurrency rests on S3 conditional writes: ``If-None-Match: *`` creates a key only if absent,
``If-Match: <etag>`` replaces it only if unchanged; the server answers 412 (or 409 when two
conditional writes race) to the loser. Every botocore failure to reach the endpoint becomes a
RegistryUnavailable naming the endpoint; timeouts and retries are bounded by settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.errors import Conflict, NotFound, RegistryUnavailable
from core.registry.object_store import ObjectStore, StoredObject
from core.settings import Settings

log = logging.getLogger(__name__)

_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class _Condition(TypedDict, total=False):
    """The precondition of a write: ``IfNoneMatch="*"`` (absent) or ``IfMatch=<etag>``."""

    IfNoneMatch: str
    IfMatch: str


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3ObjectStore(ObjectStore):
    def __init__(self, url: str, settings: Settings):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"registry URL {url!r}: expected s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = settings.s3_endpoint_url
        self.location = f"{url} (endpoint {endpoint or 'AWS default'})"
        secret = settings.s3_secret_access_key
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                connect_timeout=settings.s3_connect_timeout,
                read_timeout=settings.s3_read_timeout,
                retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"} if endpoint else None,
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unavailable(self, error: Exception) -> RegistryUnavailable:
        if isinstance(error, NoCredentialsError):
            return RegistryUnavailable(
                f"no S3 credentials for {self.location}: set LORALOOP_S3_ACCESS_KEY_ID and "
                "LORALOOP_S3_SECRET_ACCESS_KEY or the standard AWS variables"
            )
        if isinstance(error, ClientError):
            detail = f"{_code(error)}: {error.response.get('Error', {}).get('Message', '')}"
        else:
            detail = str(error)
        return RegistryUnavailable(f"S3 registry {self.location} failed: {detail}")

    def read(self, key: str) -> StoredObject | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return StoredObject(response["Body"].read(), response["ETag"])
        except ClientError as e:
            if _code(e) in _MISSING_CODES:
                return None
            raise self._unavailable(e) from e
        except BotoCoreError as e:
            raise self._unavailable(e) from e

    def _conditional_put(self, key: str, data: bytes, **condition: Unpack[_Condition]) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except ClientError as e:
            if _code(e) in _PRECONDITION_CODES:
                raise Conflict(f"{key} was changed by another writer") from e
            raise self._unavailable(e) from e
        except BotoCoreError as e:
            raise self._unavailable(e) from e

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._conditional_put(key, data, IfNoneMatch="*")
            return True
        except Conflict:
            return False

    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        if etag is None:
            self._conditional_put(key, data, IfNoneMatch="*")
        else:
            self._conditional_put(key, data, IfMatch=etag)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        names: set[str] = set()
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(full) :].rstrip("/"))
                for item in page.get("Contents", []):
                    names.add(item["Key"][len(full) :])
        except (ClientError, BotoCoreError) as e:
            raise self._unavailable(e) from e
        return sorted(n for n in names if n)

    def scan(self, prefix: str) -> dict[str, str]:
        root = self._key("")
        tags = {}
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    tags[item["Key"][len(root) :].lstrip("/")] = item["ETag"]
        except (ClientError, BotoCoreError) as e:
            raise self._unavailable(e) from e
        return tags

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if _code(e) in _MISSING_CODES:
                return False
            raise self._unavailable(e) from e
        except BotoCoreError as e:
            raise self._unavailable(e) from e

    def upload(self, key: str, source: Path) -> None:
        if self.exists(key):  # content-addressed: same key, same bytes
            return
        try:
            self._client.upload_file(str(source), self.bucket, self._key(key))
        except (ClientError, BotoCoreError, S3UploadFailedError) as e:
            raise self._unavailable(e) from e

    def download(self, key: str, dest: Path) -> None:
        try:
            self._client.download_file(self.bucket, self._key(key), str(dest))
        except ClientError as e:
            if _code(e) in _MISSING_CODES:
                raise NotFound(f"{key} is missing from the registry at {self.location}") from e
            raise self._unavailable(e) from e
        except BotoCoreError as e:
            raise self._unavailable(e) from e
