"""The load generator of bench/http.py, in a process of its own so that its CPU time is not
the server's nor the bench's: ``python -m bench.http_load`` reads one job per line on stdin
(JSON: ``base_url``, ``bodies``, ``stream``) and answers each with one JSON line.

A job sends every body at once, one connection each (keep-alive, reused across jobs), to
``POST /v1/chat/completions`` and waits for all. The client is aiohttp (its HTTP parser is
C): on these 2 cores the load generator shares the CPU with the server it measures, and httpx
(pure Python) spent about 3.5 ms of CPU per streamed request, so the last of 32 requests left
it about 100 ms after the first (docs/performance.md, "Over HTTP").

The answer: wall ``seconds`` from the first send to the last byte, each request's
``finish_reasons`` and ``completion_tokens`` (from ``usage`` when the server gives it, else
None), its time to first content (``ttft``, streams only), and this process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

PATH = "/v1/chat/completions"


async def one(http: aiohttp.ClientSession, body: dict, stream: bool) -> dict:
    started = time.perf_counter()
    if not stream:
        async with http.post(PATH, json=body) as r:
            r.raise_for_status()
            data = await r.json()
        usage = data.get("usage") or {}
        return {
            "finish_reason": data["choices"][0]["finish_reason"],
            "completion_tokens": usage.get("completion_tokens"),
            "ttft": None,
        }
    finish, tokens, ttft = None, None, None
    async with http.post(PATH, json=body) as r:
        r.raise_for_status()
        async for raw in r.content:  # one line at a time
            line = raw.rstrip(b"\r\n")
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
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
    clients: dict[str, aiohttp.ClientSession] = {}
    try:
        for line in jobs:
            job = json.loads(line)
            bodies = job["bodies"]
            url = job["base_url"]
            if url not in clients:
                clients[url] = aiohttp.ClientSession(
                    base_url=url,
                    # idle connections dropped before a server's own keep-alive timeout
                    # (uvicorn's: 5 s) can close one under a request
                    connector=aiohttp.TCPConnector(limit=len(bodies), keepalive_timeout=1),
                    timeout=aiohttp.ClientTimeout(total=600),
                )
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
            await client.close()


if __name__ == "__main__":
    asyncio.run(run(sys.stdin, sys.stdout))
