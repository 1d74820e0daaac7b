"""A loraloop server as a child process (``python -m service``), for tests of what only a
process has: signals, its exit status, its log output, its memory and its child processes.

    env = server_env(tmp_path / "data", tiny_llama_dir, start_worker=False, ...)
    with server_process(env) as server:       ready once /readyz answers 200; killed (if still
        server.url, server.process, ...       alive) when the block ends
    server.log_lines()                        the server's output, kept in DATA_DIR/server.log
    rss_bytes(pid), child_pids(pid), alive(pid)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.ports import free_port

READY_TIMEOUT_SECONDS = 300  # a busy machine takes a while to import torch


def server_env(data_dir: Path, base_model: Path, **settings: Any) -> dict[str, str]:
    """This process's environment without its LORALOOP_* variables, plus LORALOOP_<NAME> for
    ``data_dir``, ``base_model``, the CPU in float32, no demo adapter, the store's URL, and then
    ``settings`` (which win). Everything else keeps the server's default (alias polling every
    5 s, the local job worker on): pass e.g. ``start_worker=False`` for a quieter server.

    LORALOOP_DATABASE_URL is always set (to the default SQLite file in ``data_dir`` unless
    given), so that a test can open the server's store with ``Store.open(env[...])``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    values: dict[str, Any] = {
        "data_dir": data_dir, "database_url": f"sqlite:///{data_dir / 'loraloop.db'}",
        "base_model": base_model, "device": "cpu", "dtype": "float32", "demo_adapter": False,
        **settings,
    }
    env.update({f"LORALOOP_{name.upper()}": str(value) for name, value in values.items()})
    return env


@dataclass
class ServiceProcess:
    process: subprocess.Popen
    url: str
    log: Path

    def log_lines(self) -> list[str]:
        """The non-blank lines the server wrote (stdout and stderr) so far."""
        return [line for line in self.log.read_text().splitlines() if line.strip()]


@contextmanager
def server_process(
    env: dict[str, str], port: int | None = None, log_level: str = "warning"
) -> Iterator[ServiceProcess]:
    """The server on ``port`` (a free one if None), its output appended to DATA_DIR/server.log
    (a file, not a pipe: a pipe nobody reads would block a server that logs a lot; appended, so
    a restarted server keeps its predecessor's lines)."""
    port = free_port() if port is None else port
    log = Path(env["LORALOOP_DATA_DIR"]) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port), "--log-level", log_level],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ServiceProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, log.read_text()[-5000:]
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


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (Linux /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return children


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs; a zombie (exited, not reaped by init yet) counts as stopped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
