"""Feedback ingestion through HTTP on SQLite and on PostgreSQL, side by side in one run.

    python -m bench.feedback [--posts 2000] [--clients 16]

For each database a real server (`python -m service`, tiny base model, loopback) takes
``--posts`` POST /v1/feedback from ``--clients`` concurrent keep-alive clients, each post with
its own Idempotency-Key. Prints requests/s and p50/p99 latency per database, and the ratio.
PostgreSQL is the one at 127.0.0.1:5432 (database ``test``), in a fresh schema dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.base.tiny_llama import build_tiny_llama

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, base: Path, database_url: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env |= {"LORALOOP_DATA_DIR": str(data_dir), "LORALOOP_BASE_MODEL": str(base),
            "LORALOOP_DATABASE_URL": database_url, "LORALOOP_DEVICE": "cpu"}
    process = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


async def ingest(port: int, posts: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(posts))

    async def client(http: httpx.AsyncClient) -> None:
        for n in counter:
            body = {"use_case": "bench", "prompt": f"prompt {n}", "candidates": [f"a {n}", f"b {n}"],
                    "choice": n % 2, "metadata": {"n": n}}
            started = time.perf_counter()
            r = await http.post("/v1/feedback", json=body, headers={"Idempotency-Key": f"k{n}"})
            latencies.append(time.perf_counter() - started)
            r.raise_for_status()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def run_one(label: str, database_url: str, base: Path, tmp: Path, posts: int, clients: int) -> dict:
    port = free_port()
    server = start_server(tmp / label, base, database_url, port)
    try:
        asyncio.run(ingest(port, min(100, posts), clients))  # warm-up, not counted
        seconds, latencies = asyncio.run(ingest(port, posts, clients))
    finally:
        server.kill()
        server.wait()
    latencies.sort()
    return {
        "label": label,
        "rps": posts / seconds,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    base = build_tiny_llama(tmp / "tiny-llama")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    pg_url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        results = [
            run_one("sqlite", f"sqlite:///{tmp / 'bench.db'}", base, tmp, args.posts, args.clients),
            run_one("postgresql", pg_url.render_as_string(hide_password=False), base, tmp, args.posts, args.clients),
        ]
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    print(f"POST /v1/feedback, {args.posts} posts, {args.clients} concurrent clients")
    print(f"{'database':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['label']:<12} {r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f}")
    print(f"postgresql / sqlite throughput: {results[1]['rps'] / results[0]['rps']:.2f}x")


if __name__ == "__main__":
    main()
