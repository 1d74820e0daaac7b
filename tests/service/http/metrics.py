"""Reading the server's /metrics (Prometheus text) from a test."""

from __future__ import annotations

import re

import httpx


def running(client: httpx.Client) -> float:
    """vllm:num_requests_running: the generations in the engine's batch now."""
    text = client.get("/metrics").text
    return float(re.search(r'^vllm:num_requests_running\{[^}]*\} (\S+)$', text, re.M).group(1))
