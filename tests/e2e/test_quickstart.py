"""The README's quickstart, as a new user runs it: `python -m service` on the embedded defaults
(what `make serve` starts), then the README's curl request, exactly as written but for the port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service.http.conftest import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl() -> str:
    blocks = re.findall(r"```bash\n(curl .*?)```", README.read_text(), re.S)
    assert blocks, "the README shows no curl example"
    return blocks[0]


def test_serve_on_embedded_defaults_and_the_readme_request_works(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env["LORALOOP_DATA_DIR"] = str(tmp_path / "home")  # stands in for ~/.loraloop
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        command = readme_curl().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        response = json.loads(result.stdout)
        assert response["model"] == "demo@1"
        assert response["choices"][0]["text"]
        assert response["usage"]["completion_tokens"] == 16
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0
