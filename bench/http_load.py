"""The load generator of bench/http.py, in a process of its own so that its CPU time is not
the server's nor the bench's: ``python -m bench.http_load`` reads one job per line on stdin
(JSON: ``base_url``, ``bodies``, ``stream``) and answers each with one JSON line.

A job sends every body at once, one connection each (keep-alive, reused across jobs), to
``POST /v1/chat/completions`` and waits for all. The answer: wall ``seconds`` from the first
send to the last byte, each request's ``finish_reasons`` and ``completion_tokens`` (from
``usage`` when the server gives it, else None), its time to first content (``ttft``, streams
only), and this process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def one(http: httpx.AsyncClient, body: dict, stream: bool) -> dict:
    started = time.perf_counter()
    if not stream:
        r = await http.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        data = r.json()
        usage = data.get("usage") or {}
        return {
            "finish_reason": data["choices"][0]["finish_reason"],
            "completion_tokens": usage.get("completion_tokens"),
            "ttft": None,
        }
    finish, tokens, ttft = None, None, None
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"error event: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if ttft is None and (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
                finish = choice.get("finish_reason") or finish
    return {"finish_reason": finish, "completion_tokens": tokens, "ttft": ttft}


async def run(jobs, out) -> None:
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for line in jobs:
            job = json.loads(line)
            bodies = job["bodies"]
            url = job["base_url"]
            if url not in clients:
                limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
                clients[url] = httpx.AsyncClient(base_url=url, limits=limits, timeout=600)
            cpu, started = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(one(clients[url], b, job["stream"]) for b in bodies))
            seconds = time.perf_counter() - started
            out.write(json.dumps({
                "seconds": seconds,
                "cpu": time.process_time() - cpu,
                "finish_reasons": [r["finish_reason"] for r in results],
                "completion_tokens": [r["completion_tokens"] for r in results],
                "ttft": [r["ttft"] for r in results],
            }) + "\n")
            out.flush()
    finally:
        for client in clients.values():
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(run(sys.stdin, sys.stdout))
