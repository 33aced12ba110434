"""Prometheus metrics of the gateway, correct with several worker processes.

With more than one worker, `PROMETHEUS_MULTIPROC_DIR` is set before the workers start and every
process writes its samples there; `/metrics` on any worker aggregates all of them. Counters kept
by the recorder, cache and rate limiter are copied into Prometheus once a second (`sync`).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tokenmanager.gateway.ratelimit import RateLimiter
from tokenmanager.gateway.verification import TokenVerifier
from tokenmanager.usage.recorder import UsageRecorder

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def is_multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class GatewayMetrics:
    def __init__(self) -> None:
        # Metrics are not registered globally; in multiprocess mode they write to files anyway.
        self._registry = CollectorRegistry(auto_describe=True)
        registry = None if is_multiprocess() else self._registry
        self.requests = Counter(
            "tokenmanager_gateway_requests",
            "Gateway requests by route and status.",
            ("route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "tokenmanager_gateway_request_duration_seconds",
            "Time from request to last response byte.",
            ("route",),
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "tokenmanager_usage_queue_depth",
            "Usage events waiting to be written.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spool_bytes = Gauge(
            "tokenmanager_usage_spool_bytes",
            "Bytes of usage events waiting in the on-disk spool.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.dropped = Counter(
            "tokenmanager_usage_events_dropped",
            "Usage events dropped by policy.",
            ("reason",),
            registry=registry,
        )
        self.spooled = Counter(
            "tokenmanager_usage_events_spooled",
            "Usage events sent to the spool.",
            registry=registry,
        )
        self.cache = Counter(
            "tokenmanager_gateway_token_cache",
            "Token verifications by cache result.",
            ("result",),
            registry=registry,
        )
        self.ratelimit_degraded = Gauge(
            "tokenmanager_gateway_ratelimit_degraded",
            "1 while rate limits fall back to per-process counts (Redis unreachable).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._seen: dict[str, float] = {}
        # Label look-ups take a lock and build tuples; the hot path reuses the children.
        self._request_children: dict[tuple[str | None, int | None], tuple[Any, Any]] = {}

    def observe_request(self, route: str | None, status: int | None, duration_s: float) -> None:
        children = self._request_children.get((route, status))
        if children is None:
            label = route or "unmatched"
            children = (self.requests.labels(label, str(status)), self.latency.labels(label))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(duration_s)

    def _delta(self, name: str, total: float) -> float:
        delta = total - self._seen.get(name, 0.0)
        self._seen[name] = total
        return max(delta, 0.0)

    def sync(
        self,
        recorder: UsageRecorder,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        spool_bytes: int,
    ) -> None:
        stats = recorder.stats
        self.queue_depth.set(recorder.queue_depth)
        self.spool_bytes.set(spool_bytes)
        for reason, count in stats.dropped.items():
            self.dropped.labels(reason).inc(self._delta(f"dropped:{reason}", count))
        self.spooled.inc(self._delta("spooled", stats.spooled))
        self.cache.labels("hit").inc(self._delta("hit", verifier.cache_hits))
        self.cache.labels("miss").inc(self._delta("miss", verifier.cache_misses))
        self.ratelimit_degraded.set(1 if limiter.is_degraded else 0)

    def render(self) -> bytes:
        if is_multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self._registry)
