"""Feedback imports are streamed under limits: a gzip bomb, an endless line or an oversized
upload is refused with a 413 naming the setting, and nothing of it is stored."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from core.settings import Settings
from tests.http_errors import assert_error

MAX_UPLOAD = 64 << 10
MAX_DECOMPRESSED = 1 << 20
MAX_LINE = 16 << 10
ROW = {"input_text": "q", "candidate_0": "a", "candidate_1": "b", "choice": 0}


@pytest.fixture(scope="module")
def server_settings(server_settings: Settings) -> Settings:
    """The module's server with small import limits (the rest as in conftest)."""
    return server_settings.model_copy(update={
        "max_import_bytes": MAX_UPLOAD,
        "max_import_decompressed_bytes": MAX_DECOMPRESSED,
        "max_import_line_bytes": MAX_LINE,
    })


def upload(client: httpx.Client, use_case: str, name: str, body: bytes) -> httpx.Response:
    return client.post("/v1/feedback/import", params={"use_case": use_case},
                       files={"file": (name, body)})


def stored(client: httpx.Client, use_case: str) -> int:
    return len(client.get("/v1/feedback/export", params={"use_case": use_case}).text.splitlines())


def test_a_gzip_bomb_is_refused_naming_the_decompressed_limit(labeler) -> None:
    # Valid rows, four times the limit once inflated, a few KB as sent.
    line = (json.dumps(ROW) + "\n").encode()
    bomb = gzip.compress(line * (4 * MAX_DECOMPRESSED // len(line)), compresslevel=9)
    assert len(bomb) < 16 << 10
    r = upload(labeler, "bomb", "prefs.jsonl.gz", bomb)
    assert_error(r, 413, "invalid_request_error", "file",
                 f"max_import_decompressed_bytes ({MAX_DECOMPRESSED} bytes")
    assert stored(labeler, "bomb") == 0  # all or nothing: the valid rows before the limit too


def test_a_line_over_the_limit_is_refused_naming_it(labeler) -> None:
    long_row = {**ROW, "candidate_1": "b" * MAX_LINE}
    body = (json.dumps(ROW) + "\n" + json.dumps(long_row) + "\n").encode()
    r = upload(labeler, "long-line", "prefs.jsonl", body)
    assert_error(r, 413, "invalid_request_error", "file",
                 f"line 2 is longer than max_import_line_bytes ({MAX_LINE} bytes)")
    assert stored(labeler, "long-line") == 0
    # A gzip stream of one endless line stops at the limit as well.
    endless = gzip.compress(b"0" * (50 * MAX_LINE))
    r = upload(labeler, "long-line", "zeros.jsonl.gz", endless)
    assert_error(r, 413, "invalid_request_error", "file", "line 1 is longer than max_import_line_bytes")


def test_an_upload_over_the_limit_is_refused_as_it_arrives(labeler) -> None:
    rows = (json.dumps(ROW) + "\n").encode() * (2 * MAX_UPLOAD // 60)
    r = upload(labeler, "big", "prefs.jsonl", rows)  # with a Content-Length
    assert_error(r, 413, "invalid_request_error", "file", f"max_import_bytes ({MAX_UPLOAD} bytes)")

    boundary = "loraloop-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"prefs.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield head
        for start in range(0, len(rows), 8192):
            yield rows[start : start + 8192]
        yield tail

    r = labeler.post("/v1/feedback/import", params={"use_case": "big"}, content=chunked(),
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 413, "invalid_request_error", "file", "max_import_bytes")
    assert stored(labeler, "big") == 0


def test_an_import_within_the_limits_is_stored(labeler) -> None:
    rows = [{**ROW, "input_text": f"q{i}"} for i in range(300)]
    body = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    r = upload(labeler, "fits", "prefs.jsonl.gz", body)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], stored(labeler, "fits")) == (300, 300)
