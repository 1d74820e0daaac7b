"""Feedback ingestion over HTTP against the framework's own ceiling, on SQLite and PostgreSQL.

    python -m bench.feedback [--posts 2000] [--clients 16] [--rounds 2]

For each database a real server (bench/feedback_server.py: `python -m service` plus a bench-only
no-op route; tiny base model, loopback, one API key with the feedback scope) takes ``--posts``
authenticated posts of each kind from ``--clients`` concurrent keep-alive clients, each post
with its own Idempotency-Key:

- ``POST /bench/noop``: the same middleware, authentication and body model as a feedback post,
  and nothing else. Its requests/s and p99 are the ceiling of this machine and framework;
- ``POST /v1/feedback``: the real route, every 201 durable.

The two alternate in ``--rounds`` rounds (posts split between them), so that the load of
other work on a shared machine falls on both alike. The load generator is this process; the
server is another. Prints requests/s, p50/p99 and the server's CPU per post of each, and feedback's throughput and p99
as ratios of the no-op's, against the targets (>= 0.5x the requests/s, p99 <= 3x).
PostgreSQL is the one at 127.0.0.1:5432 (database ``test``), in a fresh schema dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.feedback_server import NOOP_PATH
from core.base.tiny_llama import build_tiny_llama

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
API_KEY = "bench-feedback-key-0123456789"
ROUTES = {"noop": NOOP_PATH, "feedback": "/v1/feedback"}
MIN_THROUGHPUT_RATIO = 0.5  # feedback's requests/s over the no-op's, at least
MAX_P99_RATIO = 3.0  # feedback's p99 over the no-op's, at most


@dataclass
class Timing:
    seconds: float = 0.0
    server_cpu: float = 0.0  # seconds of CPU the server process used meanwhile (all threads)
    latencies: list[float] | None = None

    def add(self, seconds: float, latencies: list[float], server_cpu: float) -> None:
        self.seconds += seconds
        self.server_cpu += server_cpu
        self.latencies = (self.latencies or []) + latencies

    @property
    def cpu_ms(self) -> float:
        """Server CPU per post: what a machine shared with other work changes least."""
        return self.server_cpu / len(self.latencies or [1]) * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies or []) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies or [])
        return ordered[int(q * (len(ordered) - 1))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies or [0.0]) * 1000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(data_dir: Path, base: Path, database_url: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    keys = [{"name": "bench", "key": API_KEY, "scopes": ["feedback"]}]
    env |= {"LORALOOP_DATA_DIR": str(data_dir), "LORALOOP_BASE_MODEL": str(base),
            "LORALOOP_DATABASE_URL": database_url, "LORALOOP_DEVICE": "cpu",
            "LORALOOP_API_KEYS": json.dumps(keys), "LORALOOP_DEMO_ADAPTER": "false",
            "LORALOOP_START_WORKER": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.feedback_server", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


async def post_all(port: int, path: str, posts: int, clients: int, run: str) -> tuple[float, list[float]]:
    """Send ``posts`` posts to ``path`` from ``clients`` concurrent clients; (seconds, latencies)."""
    latencies: list[float] = []
    counter = iter(range(posts))

    async def client(http: httpx.AsyncClient) -> None:
        for n in counter:
            body = {"use_case": "bench", "prompt": f"prompt {run} {n}", "candidates": [f"a {n}", f"b {n}"],
                    "choice": n % 2, "metadata": {"n": n}}
            started = time.perf_counter()
            r = await http.post(path, json=body, headers={"Idempotency-Key": f"{run}-{n}"})
            latencies.append(time.perf_counter() - started)
            if r.status_code != 201:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60, headers=headers
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def run_one(database_url: str, base: Path, data_dir: Path, posts: int, clients: int, rounds: int) -> dict[str, Timing]:
    port = free_port()
    server = start_server(data_dir, base, database_url, port)
    timings = {name: Timing() for name in ROUTES}
    try:
        for name, path in ROUTES.items():  # warm-up, not counted
            asyncio.run(post_all(port, path, min(200, posts), clients, f"warm-{uuid.uuid4().hex[:8]}"))
        for _ in range(rounds):
            for name, path in ROUTES.items():
                run = uuid.uuid4().hex[:8]
                cpu = cpu_seconds(server.pid)
                seconds, latencies = asyncio.run(post_all(port, path, posts // rounds, clients, run))
                timings[name].add(seconds, latencies, cpu_seconds(server.pid) - cpu)
    finally:
        server.kill()
        server.wait()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000, help="posts of each kind per database")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    base = build_tiny_llama(tmp / "tiny-llama")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    pg_url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    databases = {
        "sqlite": f"sqlite:///{tmp / 'bench.db'}",
        "postgresql": pg_url.render_as_string(hide_password=False),
    }
    results = {}
    try:
        for label, url in databases.items():
            if args.only in (None, label):
                results[label] = run_one(url, base, tmp / label, args.posts, args.clients, args.rounds)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    print(f"{args.posts} posts of each kind per database, {args.clients} concurrent clients, "
          f"{args.rounds} alternating rounds")
    print(f"{'database':<11} {'route':<13} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/post':>19}")
    for label, timings in results.items():
        for name, t in timings.items():
            print(f"{label:<11} {ROUTES[name]:<13} {t.rps:>7.0f} {t.p50:>8.1f} {t.percentile(0.99):>8.1f} "
                  f"{t.cpu_ms:>19.2f}")
    print(f"feedback vs no-op (targets: req/s >= {MIN_THROUGHPUT_RATIO}x, p99 <= {MAX_P99_RATIO}x)")
    for label, timings in results.items():
        noop, feedback = timings["noop"], timings["feedback"]
        throughput = feedback.rps / noop.rps
        p99 = feedback.percentile(0.99) / noop.percentile(0.99)
        verdict = "met" if throughput >= MIN_THROUGHPUT_RATIO and p99 <= MAX_P99_RATIO else "NOT met"
        print(f"{label:<11} req/s {throughput:.2f}x  p99 {p99:.2f}x  {verdict}")


if __name__ == "__main__":
    main()
