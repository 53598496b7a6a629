"""Prometheus metrics for the service, from prometheus_client (one registry per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_PAIRS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ServiceMetrics:
    """Requests, pairs, merged pass sizes, queue depth and latency."""

    def __init__(self, queued_pairs: Callable[[], float], inflight_pairs: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ettin_requests", "Rerank requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.pairs = Counter("ettin_pairs", "(query, document) pairs scored.", registry=self.registry)
        self.latency = Histogram(
            "ettin_request_seconds", "Request latency by route.", ["route"], registry=self.registry
        )
        self.pass_requests = Histogram(
            "ettin_pass_requests", "Requests merged into one model pass.", buckets=_SIZES, registry=self.registry
        )
        self.pass_pairs = Histogram(
            "ettin_pass_pairs", "Pairs in one model pass.", buckets=_PAIRS, registry=self.registry
        )
        self.disconnects = Counter(
            "ettin_client_disconnects", "Requests whose client left before the answer.", registry=self.registry
        )
        queued = Gauge("ettin_queued_pairs", "Pairs waiting for a model pass.", registry=self.registry)
        queued.set_function(queued_pairs)
        inflight = Gauge("ettin_inflight_pairs", "Pairs admitted and not yet answered.", registry=self.registry)
        inflight.set_function(inflight_pairs)

    def on_pass(self, requests: int, pairs: int) -> None:
        self.pass_requests.observe(requests)
        self.pass_pairs.observe(pairs)
