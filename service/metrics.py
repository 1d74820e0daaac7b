"""Every Prometheus metric the service exports, defined in this one module.

Request-level series use vLLM's names (``vllm:...``) so existing vLLM dashboards and alerts
work unchanged; per-adapter series are ``loraloop_adapter_*`` with ``adapter`` (and where it
matters ``version``) labels. Each server builds its own ``ServiceMetrics`` on its own
CollectorRegistry, so several servers (or tests) in one process never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.adapters import Tier
from core.names import BASE_MODEL, AdapterVersion

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60)


class ServiceMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        self.model_name = model_name
        r = self.registry
        m = ["model_name"]
        # --- vLLM-compatible request metrics ---
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", m,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inter_token_latency = Histogram(
            "vllm:inter_token_latency_seconds", "Time between consecutive output tokens.", m,
            buckets=_TOKEN_LATENCY_BUCKETS, registry=r,
        )
        self.e2e_latency = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", m,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.requests_running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", m, registry=r
        )
        self.requests_waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting for a batch slot.", m, registry=r
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens processed.", m, registry=r
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Tokens generated.", m, registry=r
        )
        self.request_success = Counter(
            "vllm:request_success", "Finished requests by finish reason.", [*m, "finished_reason"],
            registry=r,
        )
        # --- loraloop: per adapter ---
        self.adapter_requests = Counter(
            "loraloop_adapter_requests", "Requests served per adapter version.",
            ["adapter", "version"], registry=r,
        )
        self.adapter_latency = Histogram(
            "loraloop_adapter_request_latency_seconds", "End-to-end latency per adapter.",
            ["adapter"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.adapter_cache_hits = Counter(
            "loraloop_adapter_cache_hits", "Adapter lookups served from a tier (slot or host memory).",
            ["adapter", "tier"], registry=r,
        )
        self.adapter_cache_misses = Counter(
            "loraloop_adapter_cache_misses",
            "Adapter lookups that had to load it (from the disk cache or the registry).",
            ["adapter"], registry=r,
        )
        self.adapter_evictions = Counter(
            "loraloop_adapter_evictions", "Adapters evicted from a tier.", ["adapter", "tier"],
            registry=r,
        )
        self.adapter_load_seconds = Histogram(
            "loraloop_adapter_load_seconds", "Time to bring an adapter into a slot.", ["adapter"],
            buckets=_LOAD_BUCKETS, registry=r,
        )
        self.adapter_swaps = Counter(
            "loraloop_adapter_swaps", "Alias moves followed by the engine (hot-swaps).",
            ["adapter", "alias"], registry=r,
        )
        # --- loraloop: errors and the completion log ---
        self.requests_rejected = Counter(
            "loraloop_requests_rejected", "Requests refused before generation, by reason.",
            ["reason"], registry=r,
        )
        self.completion_log_dropped = Counter(
            "loraloop_completion_log_dropped",
            "Completion records dropped because the log writer's queue was full.", registry=r,
        )

    def request_served(self, version: AdapterVersion | None, seconds: float) -> None:
        """A request ended on ``version`` (None: the base model, labelled ``base`` and ``-``)."""
        adapter, number = (BASE_MODEL, "-") if version is None else (version.adapter, str(version.version))
        self.adapter_requests.labels(adapter, number).inc()
        self.adapter_latency.labels(adapter).observe(seconds)

    # --- service.engine.events.EngineEvents: the engine reports adapter residency here ---

    def adapter_hit(self, adapter: str, tier: Tier) -> None:
        self.adapter_cache_hits.labels(adapter, tier).inc()

    def adapter_miss(self, adapter: str) -> None:
        self.adapter_cache_misses.labels(adapter).inc()

    def adapter_loaded(self, adapter: str, seconds: float) -> None:
        self.adapter_load_seconds.labels(adapter).observe(seconds)

    def adapter_evicted(self, adapter: str, tier: Tier) -> None:
        self.adapter_evictions.labels(adapter, tier).inc()

    def alias_moved(self, adapter: str, alias: str) -> None:
        self.adapter_swaps.labels(adapter, alias).inc()

    def observe_engine(self, engine) -> None:
        """Refresh the gauges that are states, not events, from the engine (at scrape time)."""
        stats = engine.stats()
        self.requests_running.labels(self.model_name).set(stats.running)
        self.requests_waiting.labels(self.model_name).set(stats.waiting)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
