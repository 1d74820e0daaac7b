"""A loraloop server as a child process (``python -m service``), for tests that kill it or
measure it: started with LORALOOP_* settings in its environment, ready once /readyz answers 200.

    env = server_env(tmp_path, tiny_llama_dir, database_url=..., start_worker=True)
    with server_process(env, port) as process: ...      killed (if alive) when the block ends
    rss_bytes(process.pid), child_pids(process.pid)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT_SECONDS = 300  # a busy machine takes a while to import torch


def server_env(data_dir: Path, base_model: Path, **settings: Any) -> dict[str, str]:
    """This process's environment without its LORALOOP_* variables, plus the given settings
    (as LORALOOP_<NAME>) on the CPU, with no demo adapter unless asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    values = {"data_dir": data_dir, "base_model": base_model, "device": "cpu", "demo_adapter": False,
              **settings}
    env.update({f"LORALOOP_{name.upper()}": str(value) for name, value in values.items()})
    return env


@contextmanager
def server_process(env: dict[str, str], port: int) -> Iterator[subprocess.Popen]:
    """The server on ``port``, its output appended to DATA_DIR/server.log (a file, not a pipe:
    a pipe nobody reads would block a server that logs a lot)."""
    log = Path(env["LORALOOP_DATA_DIR"]) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, log.read_text()[-5000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


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
