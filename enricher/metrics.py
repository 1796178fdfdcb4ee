"""The service's own Prometheus metrics, one registry per application instance.

A registry per app (not the global one) lets tests build several apps in one process; the
backend clients' module-level metrics live in the default registry and are exposed too.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_STAGE = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.notifications = Counter(
            "enricher_notifications_total",
            "Alertmanager notifications by outcome (received, accepted, duplicate, rejected).",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "enricher_notifications_rejected_total",
            "Notifications refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            "enricher_alerts_accepted_total",
            "Alerts inside accepted notifications.",
            registry=r,
        )
        self.ignored = Counter(
            "enricher_intake_ignored_total",
            "Notifications acknowledged but not paged, by reason (enriched: every alert carries "
            "the forward marker label, so paging it would loop through Alertmanager).",
            ["reason"],
            registry=r,
        )
        self.backlog = Gauge("enricher_backlog_jobs", "Jobs not yet done or failed.", registry=r)
        self.connections_open = Gauge(
            "enricher_connections_open", "Client connections open now.", registry=r
        )
        self.connections_closed = Counter(
            "enricher_connections_closed_total",
            "Connections the service closed on its own, by reason (max_connections: refused "
            "with 503 at the cap; header_timeout: the request head came too slowly; idle: "
            "keep-alive idle past idle_timeout).",
            ["reason"],
            registry=r,
        )
        for reason in ("max_connections", "header_timeout", "idle"):
            self.connections_closed.labels(reason)
        self.ack_seconds = Histogram(
            "enricher_intake_ack_seconds",
            "Time from request to acknowledgement, durable commit included.",
            buckets=_FAST,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "enricher_stage_seconds",
            "Latency of each pipeline stage.",
            ["stage"],
            buckets=_STAGE,
            registry=r,
        )
        self.stage_outcomes = Counter(
            "enricher_stage_outcomes_total",
            "Stage results (ok, timeout, error).",
            ["stage", "outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            "enricher_deliveries_total",
            "Delivery attempts by notifier and outcome.",
            ["notifier", "outcome"],
            registry=r,
        )
        self.pages = Counter(
            "enricher_pages_total",
            "Pages sent, by status and whether degraded.",
            ["status", "degraded"],
            registry=r,
        )
        self.past_deadline = Counter(
            "enricher_pages_past_deadline_total",
            "Pages that went out after their deadline.",
            registry=r,
        )
        self.page_latency = Histogram(
            "enricher_page_latency_seconds",
            "From receipt of the notification to the page.",
            buckets=_STAGE,
            registry=r,
        )
        self.jobs = Counter(
            "enricher_jobs_total", "Finished jobs by outcome.", ["outcome"], registry=r
        )
        self.commit_seconds = Histogram(
            "enricher_store_commit_seconds",
            "Duration of one durable group commit (the fsync a 2xx waits for).",
            buckets=_FAST,
            registry=r,
        )
        self.commit_batch = Histogram(
            "enricher_store_commit_batch_size",
            "Write operations made durable by one commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        # Children cached: the intake path should not pay for label lookups.
        self.n_received = self.notifications.labels("received")
        self.n_accepted = self.notifications.labels("accepted")
        self.n_duplicate = self.notifications.labels("duplicate")
        self.n_rejected = self.notifications.labels("rejected")
        self.n_ignored_enriched = self.ignored.labels("enriched")  # exported at 0 from the start
        # --- LLM root-cause stage: TTFT, decode speed, wall time and failure/retry rate, by
        # phase (single, chunk, merge, repair), as a call's cost and speed differ per phase.
        _llm = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
        self.llm_ttft = Histogram(
            "enricher_llm_ttft_seconds",
            "Time to first token of one LLM call (the whole latency when not streamed).",
            ["phase"],
            buckets=_llm,
            registry=r,
        )
        self.llm_tokens_per_s = Histogram(
            "enricher_llm_output_tokens_per_second",
            "Output tokens per second of one LLM call, after the first token when streamed.",
            ["phase"],
            buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640, 1280),
            registry=r,
        )
        self.llm_call_seconds = Histogram(
            "enricher_llm_call_seconds",
            "Wall time of one LLM call, retries included.",
            ["phase"],
            buckets=_llm,
            registry=r,
        )
        self.llm_seconds = Histogram(
            "enricher_llm_analysis_seconds",
            "Wall time of the LLM stage for one alert, all calls included, by status.",
            ["status"],
            buckets=_llm,
            registry=r,
        )
        self.llm_calls = Counter(
            "enricher_llm_calls_total",
            "LLM calls by phase and outcome (ok or the failure reason).",
            ["phase", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "enricher_llm_tokens_total",
            "LLM tokens (server-reported, else estimated as chars/4), by direction.",
            ["direction"],
            registry=r,
        )
        self.llm_retries = Counter(
            "enricher_llm_retries_total", "Retried LLM requests.", registry=r
        )
        self.llm_failures = Counter(
            "enricher_llm_failures_total",
            "Failed LLM calls by reason (timeout, rate_limited, malformed, ...).",
            ["reason"],
            registry=r,
        )
        self.analysis_fallbacks = Counter(
            "enricher_analysis_fallbacks_total",
            "Alerts paged with the deterministic analysis alone, by why the LLM added nothing.",
            ["reason"],
            registry=r,
        )
        self.llm_cache_hits = Counter(
            "enricher_llm_cache_hits_total",
            "LLM answers reused for an identical bundle (cache or shared in-flight call).",
            ["kind"],
            registry=r,
        )
        self.llm_dropped_claims = Counter(
            "enricher_llm_dropped_claims_total",
            "LLM claims dropped by grounding (unknown or no evidence ids, injection, ...).",
            registry=r,
        )

    def child(self, metric: Any, *values: str) -> Any:
        """The labelled child, cached: `labels()` takes a lock and builds a tuple every call."""
        key = (id(metric), values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*values)
        return c

    def committed(self, ops: int, seconds: float) -> None:
        self.commit_batch.observe(ops)
        self.commit_seconds.observe(seconds)

    def reject(self, reason: str) -> None:
        self.n_rejected.inc()
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)
