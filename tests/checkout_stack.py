"""The checkout incident recorded on a real stack, replayed for the end-to-end tests: Tempo,
Loki and Grafana doubles loaded with it (moved to the present so it falls inside the alert's
window), and an exporter whose traffic fails as the recorded request did, each exemplar
carrying its trace id, for a real Prometheus to scrape.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.doubles.exporter import Exporter
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.tempo import TempoDouble, otlp_from_tempo
from tests.evidence.conftest import fixture_json
from tests.realstack import Enricher, free_port, http_post

FAILING = "b22fc2a2caac4451e1a7afb90ea05a3b"  # the recorded failing request
HEALTHY = ["1" * 32, "2" * 32]

RULES = """
groups:
  - name: checkout
    rules:
      - alert: CheckoutHighErrorRate
        expr: |
          sum(rate(http_requests_total{service="checkout",status=~"5.."}[1m]))
          /
          sum(rate(http_requests_total{service="checkout"}[1m])) > 0.05
        labels: {severity: critical, team: payments, service: checkout}
        annotations:
          summary: Checkout 5xx rate is above 5%
          runbook_url: https://runbooks.example.com/payments/checkout-5xx
          dashboard_url: https://grafana.example.com/d/checkout?var-service=checkout
"""


def _shift_trace(otlp: dict[str, Any], delta_ns: int) -> dict[str, Any]:
    out = copy.deepcopy(otlp)
    for rs in out["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("startTimeUnixNano", "endTimeUnixNano"):
                    sp[key] = str(int(sp[key]) + delta_ns)
                for ev in sp.get("events", []):
                    ev["timeUnixNano"] = str(int(ev["timeUnixNano"]) + delta_ns)
    return out


def _healthy_variant(otlp: dict[str, Any], trace_id: str) -> dict[str, Any]:
    """The same route served well: every span fast and without error, its own ids."""
    out = copy.deepcopy(otlp)
    for rs in out["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                sp["traceId"] = trace_id
                sp["spanId"] = trace_id[:8] + sp["spanId"][8:]
                if sp.get("parentSpanId"):
                    sp["parentSpanId"] = trace_id[:8] + sp["parentSpanId"][8:]
                start = int(sp["startTimeUnixNano"])
                sp["endTimeUnixNano"] = str(start + 20_000_000)
                sp["status"] = {}
                sp["events"] = []
    return out


def _recorded_logs(delta_ns: int) -> dict[str, Any]:
    streams = []
    for name in ("loki-by-trace-structured-metadata.json", "loki-service-errors.json"):
        for s in fixture_json(name)["data"]["result"]:
            labels = {k: v for k, v in s["stream"].items() if k in ("env", "service_name")}
            meta = {k: s["stream"][k] for k in ("trace_id", "span_id") if k in s["stream"]}
            streams.append(
                {
                    "stream": labels,
                    "values": [[str(int(ts) + delta_ns), line, meta] for ts, line in s["values"]],
                }
            )
    return {"streams": streams}


class Traffic:
    """Checkout requests, most of them failing, each exemplar carrying its trace id."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.exporter.request("checkout", "504", 1.42, FAILING)
            self.exporter.request("checkout", "200", 0.03, HEALTHY[n % 2])
            n += 1
            self.stop.wait(0.2)


@dataclass
class Backends:
    tempo: TempoDouble
    loki: LokiDouble
    grafana: GrafanaDouble
    exporter_port: int

    def sources(self, prometheus_url: str | None = None) -> dict[str, Any]:
        """The enricher's `sources` section for these backends."""
        out: dict[str, Any] = {
            "tempo": {"url": self.tempo.url},
            "loki": {"url": self.loki.url},
            "grafana": {"url": self.grafana.url},
        }
        if prometheus_url:
            out["prometheus"] = {"url": prometheus_url}
        return out


@contextlib.contextmanager
def checkout_backends() -> Iterator[Backends]:
    """The doubles holding the incident, and the exporter serving its traffic, running."""
    recorded = otlp_from_tempo(fixture_json("tempo-trace-v2.json"))
    first_ns = min(
        int(sp["startTimeUnixNano"])
        for rs in recorded["resourceSpans"]
        for ss in rs["scopeSpans"]
        for sp in ss["spans"]
    )
    delta_ns = time.time_ns() - 5_000_000_000 - first_ns  # the request happened 5 s ago
    tempo, loki, grafana = TempoDouble(), LokiDouble(), GrafanaDouble()
    for d in (tempo, loki, grafana):
        d.start_in_thread()
    exporter = Exporter()
    traffic = Traffic(exporter)
    try:
        tempo.ingest(_shift_trace(recorded, delta_ns))
        for tid in HEALTHY:
            tempo.ingest(_healthy_variant(_shift_trace(recorded, delta_ns + 1_000_000_000), tid))
        loki.push(_recorded_logs(delta_ns))
        port = free_port()
        exporter.start(port)
        traffic.thread.start()
        yield Backends(tempo, loki, grafana, port)
    finally:
        traffic.stop.set()
        exporter.stop()
        for d in (tempo, loki, grafana):
            d.stop_thread()


def post_deploy(enricher: Enricher) -> None:
    """CI reports the deploy of checkout 2.4.1 four minutes before the errors began."""
    deployed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 240))
    event = {
        "service": "checkout",
        "version": "2.4.1",
        "commit": "7a3f9c2",
        "environment": "prod",
        "time": deployed,
    }
    status, body = http_post(
        f"{enricher.url}/api/v1/deploys", json.dumps(event).encode(), headers=enricher.read_headers
    )
    assert status == 201, body
