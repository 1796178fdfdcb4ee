"""Synthetic incidents for gather tests and the benchmark, fed to the doubles by their APIs.

Why generated: the product must find a culprit by its general algorithm, not because it was
tuned to the one recorded incident. An `Incident` describes a service, its dependencies, which
dependency misbehaves (error or latency) in failing requests, and which dependency errs in
every request (background noise); it produces OTLP traces, Loki push bodies, exemplars,
build-info samples and the Alertmanager message, all consistent with each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote_plus

from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.tempo import TempoDouble

BASE_TIME = 1_900_000_000.0  # 2030-03-17, far from any real data


@dataclass
class Dep:
    service: str
    op: str
    ms: float
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Incident:
    service: str = "payments"
    op: str = "POST /api/pay"
    deps: list[Dep] = field(
        default_factory=lambda: [
            Dep("fraud", "POST /fraud/score", 15),
            Dep(
                "redis-cache",
                "GET session",
                2,
                {"db.system": "redis", "db.query.text": "GET session:*"},
            ),
            Dep(
                "ledger",
                "INSERT entries",
                12,
                {"db.system": "postgresql", "db.query.text": "INSERT INTO entries VALUES ($1)"},
            ),
            Dep("promo", "GET /promo/banner", 5),
        ]
    )
    culprit: str = "ledger:INSERT entries"
    mode: Literal["error", "latency"] = "error"
    culprit_ms: float = 900.0
    culprit_attrs: dict[str, Any] = field(
        default_factory=lambda: {"db.rows_affected": 0, "feature_flag.batch_ledger": True}
    )
    culprit_exception: tuple[str, str] = ("DeadlockDetected", "deadlock detected on entries")
    culprit_log: str = "deadlock detected while inserting ledger entries, retry budget exhausted"
    background: str | None = "promo:GET /promo/banner"
    failing: int = 8
    healthy: int = 8
    end: float = BASE_TIME
    new_version: str = "5.2.0"
    new_commit: str = "d4e5f6a"
    old_version: str = "5.1.9"
    old_commit: str = "a1b2c3d"
    deploy_minutes_before: float = 6.0
    extra_log_lines: int = 0
    secret_line: str | None = None
    seed: int = 7
    failing_ids: list[str] = field(default_factory=list)
    healthy_ids: list[str] = field(default_factory=list)

    # --- generation -----------------------------------------------------------------------

    def build(self) -> Incident:
        rnd = random.Random(self.seed)
        self._rnd = rnd
        self.traces: list[dict[str, Any]] = []  # resourceSpans entries
        self.streams: list[dict[str, Any]] = []
        self.exemplars: list[tuple[dict[str, str], dict[str, str], float, float]] = []
        n = self.failing + self.healthy
        for i in range(n):
            failing = (i % 2 == 0 and len(self.failing_ids) < self.failing) or (
                len(self.healthy_ids) >= self.healthy
            )
            t = self.end - 240 + i * (230 / n)
            self._request(failing, t)
        return self

    def _hex(self, n: int) -> str:
        return "".join(self._rnd.choice("0123456789abcdef") for _ in range(n))

    def _resource(self, service: str) -> dict[str, Any]:
        attrs = [("service.name", service), ("deployment.environment.name", "prod")]
        if service == self.service:
            attrs += [
                ("service.version", self.new_version),
                ("vcs.ref.head.revision", self.new_commit),
            ]
        return {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs]}

    @staticmethod
    def _attr(k: str, v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"key": k, "value": {"boolValue": v}}
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        if isinstance(v, float):
            return {"key": k, "value": {"doubleValue": v}}
        return {"key": k, "value": {"stringValue": str(v)}}

    def _log(self, service: str, ts_ns: int, line: str, tid: str, sid: str) -> None:
        self.streams.append(
            {
                "stream": {"service_name": service, "env": "prod"},
                "values": [
                    [
                        str(ts_ns),
                        f"{line} trace_id={tid} span_id={sid}",
                        {"trace_id": tid, "span_id": sid},
                    ]
                ],
            }
        )

    def _request(self, failing: bool, t: float) -> None:
        tid, root_id = self._hex(32), self._hex(16)
        (self.failing_ids if failing else self.healthy_ids).append(tid)
        start = int(t * 1e9)
        cursor = start + 1_000_000
        spans: list[tuple[str, dict[str, Any]]] = []
        for d in self.deps:
            key = f"{d.service}:{d.op}"
            ms = d.ms * (0.8 + 0.4 * self._rnd.random())
            err = False
            attrs = dict(d.attrs)
            events: list[dict[str, Any]] = []
            if key == self.culprit and failing:
                ms = self.culprit_ms * (0.9 + 0.2 * self._rnd.random())
                attrs.update(self.culprit_attrs)
                err = self.mode == "error"
                if err:
                    events.append(
                        {
                            "timeUnixNano": str(cursor + int(ms * 1e6)),
                            "name": "exception",
                            "attributes": [
                                self._attr("exception.type", self.culprit_exception[0]),
                                self._attr("exception.message", self.culprit_exception[1]),
                            ],
                        }
                    )
            if key == self.background:
                err = True
                events.append(
                    {
                        "timeUnixNano": str(cursor + int(ms * 1e6)),
                        "name": "exception",
                        "attributes": [
                            self._attr("exception.type", "TimeoutError"),
                            self._attr("exception.message", "banner timeout"),
                        ],
                    }
                )
            sid = self._hex(16)
            span = {
                "traceId": tid,
                "spanId": sid,
                "parentSpanId": root_id,
                "name": d.op,
                "kind": 3,
                "startTimeUnixNano": str(cursor),
                "endTimeUnixNano": str(cursor + int(ms * 1e6)),
                "attributes": [self._attr(k, v) for k, v in attrs.items()],
                "events": events,
                "status": {"code": 2, "message": events[0]["attributes"][1]["value"]["stringValue"]}
                if err
                else {},
            }
            spans.append((d.service, span))
            if key == self.culprit and failing:
                self._log(d.service, cursor + int(ms * 1e6), self.culprit_log, tid, sid)
            if key == self.background:
                self._log(
                    self.service,
                    cursor + int(ms * 1e6),
                    "error failed to load promo banner: context deadline exceeded",
                    tid,
                    sid,
                )
            cursor += int(ms * 1e6) + 200_000
        end = cursor + 2_000_000
        dur = (end - start) / 1e9
        status = "500" if failing and self.mode == "error" else "200"
        root = {
            "traceId": tid,
            "spanId": root_id,
            "name": self.op,
            "kind": 2,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end),
            "attributes": [
                self._attr("http.request.method", self.op.split()[0]),
                self._attr("http.route", self.op.split()[-1]),
                self._attr("http.response.status_code", int(status)),
            ],
            "status": {"code": 2} if status == "500" else {},
        }
        spans.insert(0, (self.service, root))
        for svc, sp in spans:
            self.traces.append(
                {
                    "resource": self._resource(svc),
                    "scopeSpans": [{"scope": {"name": "scenario"}, "spans": [sp]}],
                }
            )
        level = "error" if status == "500" else "info"
        self._log(
            self.service,
            end,
            f"{level} {self.op} status={status} duration_ms={int(dur * 1000)}",
            tid,
            root_id,
        )
        if self.secret_line and failing:
            self._log(self.service, end + 1, self.secret_line, tid, root_id)
        series = {
            "__name__": "http_requests_total",
            "service": self.service,
            "status": status,
            "job": "app",
            "instance": "10.0.0.1:9000",
        }
        self.exemplars.append((series, {"trace_id": tid}, 1.0, end / 1e9))
        le = next(
            (b for b in ("0.05", "0.1", "0.25", "0.5", "1", "2.5") if dur <= float(b)), "+Inf"
        )
        bucket = {
            "__name__": "http_request_duration_seconds_bucket",
            "service": self.service,
            "le": le,
            "job": "app",
            "instance": "10.0.0.1:9000",
        }
        self.exemplars.append((bucket, {"trace_id": tid}, dur, end / 1e9))

    # --- alert ----------------------------------------------------------------------------

    @property
    def expr(self) -> str:
        s = self.service
        if self.mode == "latency":
            return (
                f"histogram_quantile(0.99, sum by (le, service) (rate("
                f'http_request_duration_seconds_bucket{{service="{s}"}}[1m]))) > 0.5'
            )
        return (
            f'sum(rate(http_requests_total{{service="{s}",status=~"5.."}}[1m])) / '
            f'sum(rate(http_requests_total{{service="{s}"}}[1m])) > 0.05'
        )

    @property
    def alertname(self) -> str:
        return f"{self.service.title()}High{'Latency' if self.mode == 'latency' else 'ErrorRate'}"

    def alert_message(
        self, generator_url: bool = True, n_alerts: int = 1, pod_labels: bool = False
    ) -> dict[str, Any]:
        from datetime import UTC, datetime

        starts = datetime.fromtimestamp(self.end - 60, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        labels = {"alertname": self.alertname, "service": self.service, "severity": "critical"}
        alerts = []
        for i in range(n_alerts):
            al = dict(labels)
            if pod_labels:
                al["pod"] = f"{self.service}-{i}"
            alerts.append(
                {
                    "status": "firing",
                    "labels": al,
                    "annotations": {
                        "summary": f"{self.service} is failing",
                        "runbook_url": f"https://runbooks.example.com/{self.service}",
                        "dashboard_url": f"https://grafana.example.com/d/{self.service}",
                    },
                    "startsAt": starts,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": (
                        "http://prometheus:9090/graph?g0.expr="
                        + quote_plus(self.expr)
                        + "&g0.tab=1"
                    )
                    if generator_url
                    else "",
                    "fingerprint": f"{i:016x}",
                }
            )
        return {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{self.alertname}"}}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "enricher",
            "groupLabels": {"alertname": self.alertname},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }

    # --- feeding the doubles --------------------------------------------------------------

    def load(
        self,
        prometheus: PrometheusDouble | None = None,
        tempo: TempoDouble | None = None,
        loki: LokiDouble | None = None,
        grafana: GrafanaDouble | None = None,
    ) -> None:
        if tempo is not None:
            tempo.ingest({"resourceSpans": self.traces})
        if loki is not None:
            loki.push({"streams": self.streams})
            extra = [
                [
                    str(int((self.end - 200 + i * 0.01) * 1e9)),
                    f"error failed to refresh widget {i % 7}: upstream returned {500 + i % 4}",
                ]
                for i in range(self.extra_log_lines)
            ]
            if extra:
                loki.push(
                    {
                        "streams": [
                            {
                                "stream": {"service_name": self.service, "env": "prod"},
                                "values": extra,
                            }
                        ]
                    }
                )
        if prometheus is not None:
            for series, labels, value, ts in self.exemplars:
                prometheus.add_exemplar(series, labels, value, ts)
            deploy = self.end - 60 - self.deploy_minutes_before * 60
            old = {
                "__name__": "build_info",
                "service": self.service,
                "version": self.old_version,
                "commit": self.old_commit,
            }
            new = {**old, "version": self.new_version, "commit": self.new_commit}
            t = self.end - 1800
            while t <= self.end + 30:
                prometheus.add_samples(new if t >= deploy else old, [(t, 1.0)])
                t += 15
        if grafana is not None:
            deploy_ms = int((self.end - 60 - self.deploy_minutes_before * 60) * 1000)
            grafana.add(
                deploy_ms,
                f"Deploy {self.service} v{self.new_version} ({self.new_commit}) by CI",
                ["deploy", f"service:{self.service}"],
            )


class TwoRegressions(Incident):
    """Half the failing requests hit one regression, half another, independent of it."""

    regressions: tuple[str, str] = ("ledger:INSERT entries", "fraud:POST /fraud/score")

    def _request(self, failing: bool, t: float) -> None:
        if failing:
            self.culprit = self.regressions[len(self.failing_ids) % 2]
        super()._request(failing, t)
