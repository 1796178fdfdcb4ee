"""A test exporter that serves OpenMetrics with exemplars, for a real Prometheus to scrape.

Uses prometheus_client's own HTTP server, which answers with the OpenMetrics format (the only
text format that can carry exemplars) when the scraper's Accept header asks for it, as
Prometheus does by default.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


class Exporter:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "Requests by outcome.", ["service", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency.",
            ["service"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def request(self, service: str, status: str, seconds: float, trace_id: str) -> None:
        """Record one request with its trace id as exemplar on the counter and the bucket."""
        ex = {"trace_id": trace_id}
        self.requests.labels(service, status).inc(1, exemplar=ex)
        self.latency.labels(service).observe(seconds, exemplar=ex)

    def start(self, port: int, host: str = "127.0.0.1") -> str:
        result = start_http_server(port, addr=host, registry=self.registry)
        if isinstance(result, tuple):  # prometheus_client >= 0.20 returns (server, thread)
            self._server, self._thread = result
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
