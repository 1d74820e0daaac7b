"""Request bodies over their limit are refused with a 413 through a real server, before they
are read: at once for a declared Content-Length, as soon as the limit is passed for a chunked
body. Uploads of adapters have their own, larger limit."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from core.settings import Settings
from tests.adapters import make_adapter, multipart
from tests.api_keys import ADMIN_KEY
from tests.http_errors import assert_error

MAX_BODY = 8 << 10
MAX_UPLOAD = 1 << 20


@pytest.fixture(scope="module")
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.model_copy(
        update={"max_body_bytes": MAX_BODY, "max_upload_bytes": MAX_UPLOAD}
    )


def raw_request(base_url: str, head: str, body_parts: list[bytes] = []) -> bytes:  # noqa: B006
    """Send a request head and body parts over a plain socket, then read the answer."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        try:
            sock.sendall(head.encode())
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):  # a whole JSON error
                break
        return answer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def head(method: str, path: str, *headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Authorization: Bearer {ADMIN_KEY}", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


def error_of(answer: bytes) -> tuple[str, dict]:
    status_line, _, rest = answer.partition(b"\r\n")
    return status_line.decode(), json.loads(rest.partition(b"\r\n\r\n")[2])["error"]


def test_a_json_body_over_the_limit_is_413_naming_the_setting(client) -> None:
    prompt = "x" * MAX_BODY
    r = client.post("/v1/completions", json={"model": "base", "prompt": prompt, "max_tokens": 1})
    assert_error(r, 413, "invalid_request_error", None, f"max_body_bytes ({MAX_BODY} bytes)")
    assert r.json()["error"]["code"] == "too_large"
    # Just under the limit, the same request is served.
    r = client.post("/v1/completions", json={"model": "base", "prompt": "x" * 100, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(base_url) -> None:
    started = time.monotonic()
    answer = raw_request(base_url, head(
        "POST", "/v1/feedback", "Content-Type: application/json", f"Content-Length: {10 << 30}"
    ))  # ten GiB announced, not a byte sent: a server waiting for the body would time out
    status, error = error_of(answer)
    assert status == "HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert "max_body_bytes" in error["message"]
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_refused_once_it_passes_the_limit(base_url) -> None:
    # Three times the limit, and the body never ends (no last chunk): a server reading it
    # whole would wait for the rest.
    parts = [chunk(b'{"use_case": "x", "prompt": "')] + [chunk(b"y" * 1024)] * (3 * MAX_BODY // 1024)
    answer = raw_request(base_url, head(
        "POST", "/v1/feedback", "Content-Type: application/json", "Transfer-Encoding: chunked"
    ), parts)
    status, error = error_of(answer)
    assert status.startswith("HTTP/1.1 413"), answer[:200]
    assert f"max_body_bytes ({MAX_BODY} bytes)" in error["message"]


def test_an_adapter_upload_has_its_own_larger_limit(client, tmp_path, tiny_llama_dir) -> None:
    folder = make_adapter(tiny_llama_dir, tmp_path / "big", rank=8, seed=21)
    files = multipart(folder)
    assert MAX_BODY < sum(len(content) for _, (_, content) in files) < MAX_UPLOAD
    r = client.post("/v1/adapters/over-body-limit/versions", files=files)
    assert r.status_code == 201, r.text

    too_big = [("files", ("adapter_model.safetensors", b"\0" * (MAX_UPLOAD + 1)))]
    r = client.post("/v1/adapters/too-big/versions", files=too_big)
    assert_error(r, 413, "invalid_request_error", "files", f"max_upload_bytes ({MAX_UPLOAD} bytes)")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.zip\"\r\n\r\n"
        for _ in range(2 * MAX_UPLOAD // 8192):
            yield b"\0" * 8192
        yield b"\r\n--b--\r\n"

    r = client.post("/v1/adapters/too-big/versions", content=chunked(),
                    headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "invalid_request_error", "files", "max_upload_bytes")
    assert client.get("/v1/adapters/too-big").status_code == 404
