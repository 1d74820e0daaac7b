"""`python -m service` as a real process, for tests of what only a process has: signals, its
exit status and its log output (stderr, kept in a file so that a full pipe never stalls it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.service.http.conftest import free_port


@dataclass
class ServiceProcess:
    process: subprocess.Popen
    url: str
    log: Path

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]


def service_env(tmp_path: Path, base_model: Path, **settings: object) -> dict[str, str]:
    """The environment of a server on ``tmp_path`` serving ``base_model`` on the CPU, with
    ``settings`` as LORALOOP_* variables; no LORALOOP_* of the test's own environment leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    data_dir = tmp_path / "data"
    fields: dict[str, object] = {
        "data_dir": data_dir, "database_url": f"sqlite:///{data_dir / 'loraloop.db'}",
        "base_model": base_model, "device": "cpu",
        "dtype": "float32", "alias_poll_seconds": 0, "demo_adapter": False, "start_worker": False,
    }
    fields.update(settings)
    env.update({f"LORALOOP_{name.upper()}": str(value) for name, value in fields.items()})
    return env


@contextmanager
def running_service(env: dict[str, str], log: Path, log_level: str = "info") -> Iterator[ServiceProcess]:
    """Start the server, wait until /readyz answers 200; kill it if the block leaves it running."""
    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port), "--log-level", log_level],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ServiceProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{server.url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
