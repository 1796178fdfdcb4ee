"""Builds the root-cause evaluation scenarios with real instrumentation, then records them.

Why real tools: a hand-written trace says what its author believes a trace looks like; the
OpenTelemetry SDK, prometheus_client and Python logging say what instrumented services
actually emit (span kinds and status, exception events from `record_exception`, exemplars
kept one per bucket per scrape, OpenMetrics text, trace context injected into log lines).
Each scenario runs simulated traffic through those libraries with explicit timestamps,
feeds the result to the backend doubles by their ingest APIs, runs the real `Gatherer`
against them and records every HTTP exchange it made. The recordings (`responses.json`),
the alert and the truth are what `enricher eval` replays; the doubles are not needed then.

Reproducible: fixed base times far from now, a fixed `received_at`, one seeded random
generator per scenario (ids, latencies, routing), a simulated clock for prometheus_client.
`python -m tests.scenarios.generate [--only NAME] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

import prometheus_client.metrics
import yaml
from aiohttp import web
from opentelemetry import trace as otel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from enricher.analysis.eval import Truth, evidence_facts
from enricher.evidence import Gatherer
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import SourcesConfig
from enricher.sources.deploys import DeployEvent
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.tempo import TempoDouble

HERE = Path(__file__).resolve().parent
BASE_TIME = 1_900_000_000.0  # 2030-03-17, far from any real data
DAY = 86400.0


# --- OpenTelemetry: one provider per service instance, spans to OTLP/JSON -----------------


class SeededIds(IdGenerator):
    """Trace and span ids from the scenario's seed, so a regeneration yields the same ids."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def generate_span_id(self) -> int:
        return self.rnd.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rnd.getrandbits(128) or 1


def _any_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_any_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _kvs(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attrs or {}).items()]


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """SDK spans as an OTLP/JSON ExportTraceServiceRequest, what an OTLP/HTTP JSON exporter
    would post: hex ids, OTLP enum numbers, int64 as strings, spans grouped by resource and
    instrumentation scope."""
    groups: dict[str, tuple[dict[str, Any], dict[str, tuple[dict[str, Any], list[Any]]]]] = {}
    for s in spans:
        rkey = json.dumps(dict(s.resource.attributes), sort_keys=True)
        res = groups.setdefault(rkey, ({"attributes": _kvs(s.resource.attributes)}, {}))
        scope = s.instrumentation_scope
        sdoc: dict[str, Any] = {"name": scope.name if scope else ""}
        if scope is not None and scope.version:
            sdoc["version"] = scope.version
        skey = json.dumps(sdoc, sort_keys=True)
        _, spans_of = res[1].setdefault(skey, (sdoc, []))
        ctx = s.get_span_context()
        assert ctx is not None and s.start_time is not None and s.end_time is not None
        d: dict[str, Any] = {
            "traceId": f"{ctx.trace_id:032x}",
            "spanId": f"{ctx.span_id:016x}",
        }
        if s.parent is not None:
            d["parentSpanId"] = f"{s.parent.span_id:016x}"
        d.update(
            name=s.name,
            # The API's SpanKind starts at INTERNAL=0; OTLP reserves 0 for UNSPECIFIED.
            kind=s.kind.value + 1,
            startTimeUnixNano=str(s.start_time),
            endTimeUnixNano=str(s.end_time),
            attributes=_kvs(s.attributes),
        )
        if s.events:
            d["events"] = [
                {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _kvs(e.attributes)}
                for e in s.events
            ]
        status: dict[str, Any] = {}
        if s.status.status_code != StatusCode.UNSET:
            status["code"] = s.status.status_code.value
        if s.status.description:
            status["message"] = s.status.description
        d["status"] = status
        spans_of.append(d)
    return {
        "resourceSpans": [
            {
                "resource": res,
                "scopeSpans": [{"scope": sd, "spans": sp} for sd, sp in scopes.values()],
            }
            for res, scopes in groups.values()
        ]
    }


_EXC_TYPES: dict[str, type[Exception]] = {}


def exc(qualified: str, message: str) -> Exception:
    """An exception of the named type (`psycopg.errors.QueryCanceled`), so that
    `record_exception` reports the type a real service in that stack would."""
    cls = _EXC_TYPES.get(qualified)
    if cls is None:
        module, _, name = qualified.rpartition(".")
        cls = type(name, (Exception,), {"__module__": module or "builtins", "__qualname__": name})
        _EXC_TYPES[qualified] = cls
    return cls(message)


# --- logs: Python logging with the active span's context, shipped as Loki push bodies -----


class TraceContextFilter(logging.Filter):
    """What opentelemetry-instrumentation-logging does: the current span's ids on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = otel.get_current_span().get_span_context()
        record.otelTraceID = f"{ctx.trace_id:032x}" if ctx.is_valid else ""
        record.otelSpanID = f"{ctx.span_id:016x}" if ctx.is_valid else ""
        return True


_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}


class LineFormatter(logging.Formatter):
    """One of two common line styles; trace context appended when there is one."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.line_style = style

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, record.levelname.lower())
        msg = record.getMessage()
        tid, sid = getattr(record, "otelTraceID", ""), getattr(record, "otelSpanID", "")
        if self.line_style == "logfmt":
            line = f'level={level} logger={record.name.rsplit(".", 1)[-1]} msg="{msg}"'
            if tid:
                line += f" trace_id={tid} span_id={sid}"
            return line
        line = f"{level.upper()} {msg}"
        if tid:
            line += f" trace_id={tid} span_id={sid}"
        return line


class LokiShipper(logging.Handler):
    """Collects records as Loki push entries: stream labels from the service, the trace
    context as structured metadata (as the OTLP path to Loki 3 stores it)."""

    def __init__(self, env: str) -> None:
        super().__init__(logging.DEBUG)
        self.env = env
        self.streams: dict[str, list[list[Any]]] = {}
        self.styles: dict[str, LineFormatter] = {}
        self.plain = LineFormatter("plain")
        self.addFilter(TraceContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        service = getattr(record, "service", "unknown")
        line = self.styles.get(service, self.plain).format(record)
        meta: dict[str, str] = {}
        if getattr(record, "otelTraceID", ""):
            meta = {"trace_id": record.otelTraceID, "span_id": record.otelSpanID}
        entry: list[Any] = [str(int(record.ts_ns)), line]  # type: ignore[attr-defined]
        if meta:
            entry.append(meta)
        self.streams.setdefault(service, []).append(entry)

    def bodies(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Push bodies in batches, as a log shipper sends them."""
        for service, values in self.streams.items():
            values = sorted(values, key=lambda v: int(v[0]))
            for i in range(0, len(values), batch):
                yield {
                    "streams": [
                        {
                            "stream": {"service_name": service, "env": self.env},
                            "values": values[i : i + batch],
                        }
                    ]
                }


# --- the simulated fleet --------------------------------------------------------------------


@dataclass
class RequestMetrics:
    """The request metrics one service exposes (prometheus_client), per pod."""

    counter: str = "http_requests"
    counter_labels: tuple[str, ...] = ("service", "method", "route", "status")
    histogram: str = "http_request_duration_seconds"
    histogram_labels: tuple[str, ...] = ("service", "method", "route")
    buckets: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    exemplars: bool = True


@dataclass
class Instance:
    service: str
    version: str
    commit: str
    pod: str
    ip: str
    up: float
    down: float
    provider: TracerProvider
    registry: CollectorRegistry
    logger: logging.Logger
    metrics: RequestMetrics | None = None
    counter: Counter | None = None
    histogram: Histogram | None = None

    def active(self, t: float) -> bool:
        return self.up <= t < self.down

    def tracer(self, scope: str) -> otel.Tracer:
        return self.provider.get_tracer(scope)


@dataclass
class Call:
    """One span to emit and the calls it makes; times are laid out by `World.emit`."""

    service: str
    name: str
    kind: SpanKind = SpanKind.INTERNAL
    ms: float = 1.0  # self time
    attrs: dict[str, Any] = field(default_factory=dict)
    children: list[Call] = field(default_factory=list)
    parallel: bool = False
    error: Exception | None = None
    stack: str = ""
    status_error: str | None = None
    flags: dict[str, str] = field(default_factory=dict)  # feature_flag.evaluation events
    logs: list[tuple[int, str]] = field(default_factory=list)
    instance: Instance | None = None
    scope: str = ""
    split: float = 0.5  # share of the self time spent before the children


@dataclass
class Observation:
    t: float
    instance: Instance
    labels: dict[str, str]
    seconds: float
    trace_id: str
    span_id: str


class SimClock:
    """prometheus_client stamps exemplars with time.time(); here it is simulated time."""

    def __init__(self) -> None:
        self.now = BASE_TIME

    def time(self) -> float:
        return self.now


class World:
    """One scenario's services, pods, traffic and telemetry."""

    def __init__(self, name: str, seed: int, env: str = "prod") -> None:
        self.name = name
        self.rnd = random.Random(seed)
        self.env = env
        self.exporter = InMemorySpanExporter()
        self.processor = SimpleSpanProcessor(self.exporter)
        self.ids = SeededIds(random.Random(seed * 7919 + 1))
        self.instances: dict[str, list[Instance]] = {}
        self.shipper = LokiShipper(env)
        self.observations: list[Observation] = []
        self.annotations: list[tuple[int, str, list[str]]] = []
        self.ci_events: list[DeployEvent] = []
        self.scrape_interval: dict[str, float] = {}
        self._ip = 0

    # --- fleet ----------------------------------------------------------------------------

    def service(
        self,
        name: str,
        version: str,
        commit: str,
        pods: int = 2,
        up: float = -math.inf,
        down: float = math.inf,
        metrics: RequestMetrics | None = None,
        log_style: str = "plain",
        scrape: float = 30.0,
        stagger: float = 0.0,
    ) -> list[Instance]:
        """Pods of one version of a service; `stagger` spreads their start (a rollout)."""
        self.shipper.styles.setdefault(name, LineFormatter(log_style))
        self.scrape_interval.setdefault(name, scrape)
        out = []
        for i in range(pods):
            self._ip += 1
            suffix = "".join(self.rnd.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            pod = f"{name}-{commit[:5]}-{suffix}"
            resource = Resource(
                {
                    "service.name": name,
                    "service.version": version,
                    "vcs.ref.head.revision": commit,
                    "deployment.environment.name": self.env,
                    "k8s.pod.name": pod,
                }
            )
            provider = TracerProvider(
                sampler=ALWAYS_ON, resource=resource, id_generator=self.ids, shutdown_on_exit=False
            )
            provider.add_span_processor(self.processor)
            logger = logging.getLogger(f"scenarios.{self.name}.{name}.{i}.{version}")
            logger.handlers.clear()
            logger.propagate = False
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self.shipper)
            inst = Instance(
                service=name,
                version=version,
                commit=commit,
                pod=pod,
                ip=f"10.42.{self._ip // 200}.{self._ip % 200 + 10}",
                up=up + stagger * i,
                down=down,
                provider=provider,
                registry=CollectorRegistry(),
                logger=logger,
                metrics=metrics,
            )
            Info("build", "Build information.", ["service"], registry=inst.registry).labels(
                service=name
            ).info({"version": version, "commit": commit})
            if metrics is not None:
                inst.counter = Counter(
                    metrics.counter,
                    "Requests served, by outcome.",
                    list(metrics.counter_labels),
                    registry=inst.registry,
                )
                inst.histogram = Histogram(
                    metrics.histogram,
                    "Request duration as measured by the service.",
                    list(metrics.histogram_labels),
                    buckets=metrics.buckets,
                    registry=inst.registry,
                )
            self.instances.setdefault(name, []).append(inst)
            out.append(inst)
        return out

    def retire(self, pods: list[Instance], at: float, stagger: float = 0.0) -> None:
        for i, p in enumerate(pods):
            p.down = at + stagger * i

    def pick(self, service: str, t: float) -> Instance:
        live = [p for p in self.instances[service] if p.active(t)]
        if not live:
            raise RuntimeError(f"{self.name}: no live pod of {service} at {t}")
        return self.rnd.choice(live)

    # --- randomness -------------------------------------------------------------------------

    def u(self, lo: float, hi: float) -> float:
        return self.rnd.uniform(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rnd.random() < p

    def arrivals(self, start: float, end: float, per_s: float) -> Iterator[float]:
        t = start
        while True:
            t += self.rnd.expovariate(per_s)
            if t >= end:
                return
            yield t

    # --- spans ------------------------------------------------------------------------------

    def request(
        self,
        t: float,
        root: Call,
        labels: dict[str, str] | None = None,
        queue_ms: float = 0.0,
    ) -> str:
        """Emit one request's trace; the root's service observes it in its metrics (with the
        time spent queued before the handler, which the trace does not see)."""
        start_ns = int((t + queue_ms / 1000.0) * 1e9)
        end_ns, inst, span_id, trace_id = self.emit(root, None, start_ns)
        if labels is not None and inst.metrics is not None:
            self.observations.append(
                Observation(
                    t=end_ns / 1e9,
                    instance=inst,
                    labels=labels,
                    seconds=(end_ns - start_ns) / 1e9 + queue_ms / 1000.0,
                    trace_id=trace_id,
                    span_id=span_id,
                )
            )
        return trace_id

    def emit(
        self,
        c: Call,
        parent: otel.Span | None,
        start_ns: int,
        parent_inst: Instance | None = None,
    ) -> tuple[int, Instance, str, str]:
        inst = c.instance
        if inst is None:
            # In-process children run on their parent's pod; calls go to any live pod.
            same = parent_inst is not None and parent_inst.service == c.service
            inst = parent_inst if same else self.pick(c.service, start_ns / 1e9)
        assert inst is not None
        tracer = inst.tracer(c.scope or _default_scope(c))
        ctx = otel.set_span_in_context(parent) if parent is not None else None
        span = tracer.start_span(
            c.name, context=ctx, kind=c.kind, attributes=c.attrs, start_time=start_ns
        )
        for key, variant in c.flags.items():
            span.add_event(
                "feature_flag.evaluation",
                {
                    "feature_flag.key": key,
                    "feature_flag.provider.name": "flagd",
                    "feature_flag.result.variant": variant,
                },
                timestamp=start_ns + 15_000,
            )
        cursor = start_ns + int(c.ms * c.split * 1e6)
        if c.parallel:
            ends = [self.emit(ch, span, cursor + 30_000, inst)[0] for ch in c.children]
            cursor = max(ends, default=cursor)
        else:
            for ch in c.children:
                cursor = self.emit(ch, span, cursor + 30_000, inst)[0]
        end_ns = cursor + int(c.ms * (1 - c.split) * 1e6)
        if c.error is not None:
            attrs = {"exception.stacktrace": c.stack} if c.stack else None
            span.record_exception(c.error, attributes=attrs, timestamp=end_ns - 20_000)
            span.set_status(Status(StatusCode.ERROR, str(c.error)))
        elif c.status_error is not None:
            span.set_status(Status(StatusCode.ERROR, c.status_error))
        with otel.use_span(span, end_on_exit=False):
            for level, msg in c.logs:
                inst.logger.log(
                    level,
                    msg,
                    extra={"ts_ns": end_ns - 10_000, "service": c.service, "pod": inst.pod},
                )
        span.end(end_time=end_ns)
        sc = span.get_span_context()
        return end_ns, inst, f"{sc.span_id:016x}", f"{sc.trace_id:032x}"

    def log(self, service: str, t: float, level: int, msg: str) -> None:
        """A line outside any request (background work), from one of the service's pods."""
        inst = self.pick(service, t)
        inst.logger.log(
            level, msg, extra={"ts_ns": int(t * 1e9), "service": service, "pod": inst.pod}
        )

    # --- deploy records -----------------------------------------------------------------------

    def annotate(self, t: float, text: str, tags: list[str]) -> None:
        self.annotations.append((int(t * 1000), text, tags))

    def ci_deploy(self, service: str, version: str, commit: str, t: float) -> None:
        self.ci_events.append(
            DeployEvent(
                service=service,
                version=version,
                commit=commit,
                environment=self.env,
                time=datetime.fromtimestamp(t, UTC),
            )
        )

    # --- feeding the doubles --------------------------------------------------------------

    def load(
        self,
        prom: PrometheusDouble,
        tempo: TempoDouble,
        loki: LokiDouble,
        grafana: GrafanaDouble,
        until: float,
    ) -> None:
        tempo.ingest(otlp_json(self.exporter.get_finished_spans()))
        for body in self.shipper.bodies():
            loki.push(body)
        for t_ms, text, tags in self.annotations:
            grafana.add(t_ms, text, tags)
        self._scrape_all(prom, until)

    def _scrape_all(self, prom: PrometheusDouble, until: float) -> None:
        """Prometheus scraping every pod in OpenMetrics: samples at each scrape, and each
        exemplar the client exposes stored once (it keeps only the last one per series)."""
        clock = SimClock()
        fake_time = types.SimpleNamespace(time=clock.time, sleep=lambda s: None)
        by_pod: dict[str, list[Observation]] = {}
        for ob in self.observations:
            by_pod.setdefault(ob.instance.pod, []).append(ob)
        with mock.patch.object(prometheus_client.metrics, "time", fake_time):
            for service in sorted(self.instances):
                interval = self.scrape_interval[service]
                for inst in self.instances[service]:
                    obs = sorted(by_pod.get(inst.pod, []), key=lambda o: o.t)
                    first = max(inst.up, until - 1500.0)
                    offset = self.rnd.uniform(0, interval)
                    tick = math.floor(first / interval) * interval + offset
                    last_exemplar: dict[tuple[tuple[str, str], ...], tuple[Any, ...]] = {}
                    i = 0
                    while tick < min(inst.down, until):
                        while i < len(obs) and obs[i].t <= tick:
                            self._observe(inst, obs[i], clock)
                            i += 1
                        clock.now = tick
                        if tick >= inst.up:
                            self._scrape(prom, inst, round(tick, 3), last_exemplar)
                        tick += interval

    @staticmethod
    def _observe(inst: Instance, ob: Observation, clock: SimClock) -> None:
        m = inst.metrics
        assert m is not None and inst.counter is not None and inst.histogram is not None
        clock.now = ob.t
        ex = {"trace_id": ob.trace_id, "span_id": ob.span_id} if m.exemplars else None
        inst.counter.labels(*(ob.labels[k] for k in m.counter_labels)).inc(1, exemplar=ex)
        inst.histogram.labels(*(ob.labels[k] for k in m.histogram_labels)).observe(
            ob.seconds, exemplar=ex
        )

    def _scrape(
        self,
        prom: PrometheusDouble,
        inst: Instance,
        t: float,
        last_exemplar: dict[tuple[tuple[str, str], ...], tuple[Any, ...]],
    ) -> None:
        text = generate_latest(inst.registry).decode()
        target = {"job": inst.service, "instance": f"{inst.ip}:8080", "pod": inst.pod}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue  # Prometheus 2.x drops OpenMetrics _created series
                series = {"__name__": s.name, **s.labels, **target}
                prom.add_samples(series, [(t, float(s.value))])
                e = s.exemplar
                if e is None:
                    continue
                key = tuple(sorted(series.items()))
                ts = round(e.timestamp.sec + e.timestamp.nsec / 1e9, 3) if e.timestamp else t
                ident = (tuple(sorted(e.labels.items())), e.value, ts)
                if last_exemplar.get(key) == ident:
                    continue  # the same exemplar exposed again: Prometheus stores it once
                last_exemplar[key] = ident
                prom.add_exemplar(series, dict(e.labels), float(e.value), ts)


def _default_scope(c: Call) -> str:
    if c.kind == SpanKind.SERVER:
        return "opentelemetry.instrumentation.asgi"
    if c.kind == SpanKind.CLIENT:
        if "db.system.name" in c.attrs:
            return "opentelemetry.instrumentation.psycopg"
        if "rpc.system" in c.attrs:
            return "opentelemetry.instrumentation.grpc"
        return "opentelemetry.instrumentation.httpx"
    return f"{c.service}.app"


# --- span helpers: the semantic conventions each instrumentation follows -------------------


def http_call(
    w: World,
    caller: str,
    callee: str,
    method: str,
    route: str,
    path: str,
    server_ms: float,
    *,
    children: Sequence[Call] = (),
    status: int = 200,
    error: Exception | None = None,
    stack: str = "",
    server_logs: Sequence[tuple[int, str]] = (),
    server_attrs: dict[str, Any] | None = None,
    instance: Instance | None = None,
    client_error: Exception | None = None,
    flags: dict[str, str] | None = None,
) -> Call:
    """An HTTP client span in `caller` around the server span of `callee`."""
    server = Call(
        callee,
        f"{method} {route}",
        SpanKind.SERVER,
        server_ms,
        attrs={
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "http.response.status_code": status,
            **(server_attrs or {}),
        },
        children=list(children),
        error=error,
        stack=stack,
        status_error=f"HTTP {status}" if status >= 500 and error is None else None,
        logs=list(server_logs),
        instance=instance,
        flags=dict(flags or {}),
    )
    attrs: dict[str, Any] = {
        "http.request.method": method,
        "url.full": f"http://{callee}:8080{path}",
        "server.address": callee,
        "server.port": 8080,
    }
    if client_error is None:
        attrs["http.response.status_code"] = status
    else:
        attrs["error.type"] = type(client_error).__qualname__
    return Call(
        caller,
        f"{method} {route}",
        SpanKind.CLIENT,
        w.u(0.3, 0.9),
        attrs=attrs,
        children=[server],
        error=client_error,
        status_error=f"HTTP {status}" if status >= 500 and client_error is None else None,
    )


def grpc_call(
    w: World,
    caller: str,
    callee: str,
    full_method: str,
    server_ms: float,
    *,
    children: Sequence[Call] = (),
    code: int = 0,
    error: Exception | None = None,
    stack: str = "",
    server_attrs: dict[str, Any] | None = None,
    server_logs: Sequence[tuple[int, str]] = (),
    instance: Instance | None = None,
) -> Call:
    service, _, method = full_method.rpartition("/")
    rpc = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    server = Call(
        callee,
        full_method,
        SpanKind.SERVER,
        server_ms,
        attrs={**rpc, "rpc.grpc.status_code": code, **(server_attrs or {})},
        children=list(children),
        error=error,
        stack=stack,
        status_error=f"grpc status {code}" if code and error is None else None,
        logs=list(server_logs),
        instance=instance,
    )
    return Call(
        caller,
        full_method,
        SpanKind.CLIENT,
        w.u(0.2, 0.7),
        attrs={**rpc, "rpc.grpc.status_code": code, "server.address": callee, "server.port": 9090},
        children=[server],
        status_error=f"grpc status {code}" if code else None,
    )


def db_call(
    w: World,
    caller: str,
    system: str,
    operation: str,
    collection: str,
    query: str,
    ms: float,
    *,
    server: str = "",
    rows: int | None = None,
    error: Exception | None = None,
    extra: dict[str, Any] | None = None,
) -> Call:
    attrs: dict[str, Any] = {
        "db.system.name": system,
        "db.operation.name": operation,
        "db.collection.name": collection,
        "db.query.text": query,
        "server.address": server or f"{system}.{w.env}.svc",
        "server.port": {"postgresql": 5432, "redis": 6379, "mysql": 3306}.get(system, 5432),
    }
    if rows is not None:
        attrs["db.response.returned_rows"] = rows
    attrs.update(extra or {})
    return Call(caller, f"{operation} {collection}", SpanKind.CLIENT, ms, attrs=attrs, error=error)


def stack(*frames: tuple[str, int, str], exc_line: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for path, line, fn in frames:
        lines.append(f'  File "{path}", line {line}, in {fn}')
    lines.append(exc_line)
    return "\n".join(lines) + "\n"


# --- the alert --------------------------------------------------------------------------------


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label pairs."""
    h = 14695981039346656037
    for k in sorted(labels):
        for b in k.encode() + b"\xff" + labels[k].encode() + b"\xff":
            h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def rfc3339(t: float, ms: bool = True) -> str:
    d = datetime.fromtimestamp(t, UTC)
    if ms:
        return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_body(
    alertname: str,
    expr: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    starts: float,
    group_by: Sequence[str] = ("alertname", "service"),
) -> dict[str, Any]:
    """A webhook v4 body shaped like Alertmanager 0.25's (field order included)."""
    all_labels = {"alertname": alertname, **labels}
    group = {k: all_labels[k] for k in group_by if k in all_labels}
    alert = {
        "status": "firing",
        "labels": all_labels,
        "annotations": annotations,
        "startsAt": rfc3339(starts),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus-0.monitoring.svc:9090/graph?g0.expr="
        + quote_plus(expr)
        + "&g0.tab=1",
        "fingerprint": fingerprint(all_labels),
    }
    return {
        "receiver": "enricher",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": group,
        "commonLabels": all_labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager-0.monitoring.svc:9093",
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
    }


def error_ratio(metric: str, service: str, label: str, regex: str, window: str, thr: float) -> str:
    return (
        f'sum(rate({metric}{{service="{service}",{label}=~"{regex}"}}[{window}])) / '
        f'sum(rate({metric}{{service="{service}"}}[{window}])) > {thr:g}'
    )


def latency_quantile(q: float, metric: str, selector: str, by: str, thr: float) -> str:
    return (
        f"histogram_quantile({q:g}, sum by ({by}) (rate({metric}_bucket{{{selector}}}[5m]))) "
        f"> {thr:g}"
    )


# --- scenario definition ------------------------------------------------------------------------


@dataclass
class Built:
    name: str
    description: str
    truth: dict[str, Any]
    alert: dict[str, Any]
    starts: float
    received_at: float
    world: World


SCENARIOS: dict[str, Callable[[], Built]] = {}


def scenario(fn: Callable[[], Built]) -> Callable[[], Built]:
    SCENARIOS[fn.__name__.removeprefix("build_").replace("_", "-")] = fn
    return fn


def truth(
    service: str | None,
    operation: str | None,
    deploy: tuple[str, str, str] | None = None,
    flag: str | None = None,
    unknown: bool = False,
    also: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "service": service,
        "operation": operation,
        "deploy": {"service": deploy[0], "version": deploy[1], "commit": deploy[2]}
        if deploy
        else None,
        "flag": flag,
        "unknown": unknown,
    }
    if also:
        t["also"] = [{"service": s, "operation": o} for s, o in also]
    return t


ERROR = logging.ERROR
WARN = logging.WARNING
INFO = logging.INFO


def _http_labels(service: str, method: str, route: str, status: int) -> dict[str, str]:
    return {"service": service, "method": method, "route": route, "status": str(status)}


def _root(
    service: str,
    method: str,
    route: str,
    path: str,
    ms: float,
    children: list[Call],
    status: int,
    logs: list[tuple[int, str]] | None = None,
    flags: dict[str, str] | None = None,
    instance: Instance | None = None,
    attrs: dict[str, Any] | None = None,
) -> Call:
    return Call(
        service,
        f"{method} {route}",
        SpanKind.SERVER,
        ms,
        attrs={
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "http.response.status_code": status,
            "server.address": f"{service}.example.com",
            **(attrs or {}),
        },
        children=children,
        status_error=f"HTTP {status}" if status >= 500 else None,
        logs=logs or [],
        flags=flags or {},
        instance=instance,
        split=0.3,
    )


# (1) The article's incident: a slow query behind a feature flag, after a deploy.
@scenario
def build_checkout_slow_query_flag() -> Built:
    w = World("checkout-slow-query-flag", seed=101)
    starts = BASE_TIME + 3 * DAY + 37.704
    received = starts + 32.0
    deploy_at = starts - 240
    req = RequestMetrics()
    old = w.service("checkout", "2.4.0", "1b9d4e0", pods=3, metrics=req, log_style="logfmt")
    w.service(
        "checkout",
        "2.4.1",
        "7a3f9c2",
        3,
        up=deploy_at,
        metrics=req,
        log_style="logfmt",
        stagger=20,
    )
    w.retire(old, deploy_at + 25, stagger=20)
    w.ci_deploy("checkout", "2.4.1", "7a3f9c2", deploy_at)
    w.service("cart", "3.1.2", "c4e8a01", pods=2)
    w.service("payments", "7.0.3", "e91b2f4", pods=2, log_style="logfmt")
    w.service("db-primary", "15.4", "a1f3c9e", pods=1)
    w.service("promo", "1.9.0", "0b7d2c3", pods=1)
    w.annotate(
        starts - 500,
        "Deploy search-api v9.1.0 (4d2a6b1) by argo-cd",
        ["deploy", "service:search-api"],
    )
    sql = "SELECT * FROM orders WHERE user_id=$1 ORDER BY created_at DESC LIMIT 20"
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        inst = w.pick("checkout", t)
        flagged = inst.version == "2.4.1"
        flag_on = flagged and w.chance(0.4)
        user = w.rnd.randint(10_000, 99_999)
        flag_attr = {"feature_flag.new_checkout": flag_on} if flagged else {}
        children = [
            db_call(
                w,
                "checkout",
                "redis",
                "GET",
                "session",
                "GET session:?",
                w.u(0.3, 1.1),
                server="session-cache",
            ),
            http_call(
                w,
                "checkout",
                "cart",
                "GET",
                "/cart/{id}",
                f"/cart/{user}",
                w.u(3, 8),
                children=[
                    db_call(
                        w,
                        "cart",
                        "postgresql",
                        "SELECT",
                        "cart_items",
                        "SELECT * FROM cart_items WHERE cart_id=$1",
                        w.u(1.5, 4),
                        rows=w.rnd.randint(1, 9),
                    )
                ],
            ),
        ]
        promo_err = w.chance(0.2)
        children.append(
            http_call(
                w,
                "checkout",
                "promo",
                "GET",
                "/promo/banner",
                "/promo/banner",
                150.0 if promo_err else w.u(3, 9),
                status=504 if promo_err else 200,
                server_logs=[(WARN, "banner backend timed out after 150ms")] if promo_err else [],
            )
        )
        if flag_on:
            db_server = Call(
                "db-primary",
                "SELECT orders WHERE user_id=$1",
                SpanKind.SERVER,
                w.u(1180, 1240),
                attrs={
                    "db.system.name": "postgresql",
                    "db.namespace": "shop",
                    "db.query.text": sql,
                    "db.rows_affected": 1110482,
                    **flag_attr,
                },
                error=exc(
                    "psycopg.errors.QueryCanceled", "canceling statement due to statement timeout"
                ),
                logs=[(WARN, "slow query: seq scan on orders (1.1M rows), index not used")],
                scope="pg_tracing",
            )
        else:
            db_server = Call(
                "db-primary",
                "SELECT orders WHERE user_id=$1",
                SpanKind.SERVER,
                w.u(1.8, 5.5),
                attrs={
                    "db.system.name": "postgresql",
                    "db.namespace": "shop",
                    "db.query.text": sql,
                    "db.rows_affected": w.rnd.randint(3, 20),
                    **flag_attr,
                },
                scope="pg_tracing",
            )
        db = db_call(
            w,
            "checkout",
            "postgresql",
            "SELECT",
            "orders",
            sql,
            w.u(0.2, 0.6),
            server="db-primary",
            extra=flag_attr,
        )
        db.children = [db_server]
        if flag_on:
            db.error = exc(
                "psycopg.errors.QueryCanceled", "canceling statement due to statement timeout"
            )
        children.append(db)
        status = 500 if flag_on else 200
        logs: list[tuple[int, str]] = []
        if flag_on:
            logs.append(
                (
                    ERROR,
                    "checkout failed: QueryCanceled: canceling statement due to "
                    "statement timeout status=500",
                )
            )
        else:
            children.append(
                http_call(
                    w,
                    "checkout",
                    "payments",
                    "POST",
                    "/payments/charge",
                    "/payments/charge",
                    w.u(30, 70),
                    children=[Call("payments", "tokenize card", ms=w.u(2, 4))],
                )
            )
            logs.append((INFO, f"order placed user={user} status=200"))
        root = _root(
            "checkout",
            "POST",
            "/api/checkout",
            "/api/checkout",
            w.u(2, 5),
            children,
            status,
            logs,
            flags={"new_checkout": "on" if flag_on else "off"} if flagged else None,
            instance=inst,
        )
        w.request(t, root, _http_labels("checkout", "POST", "/api/checkout", status))
    expr = error_ratio("http_requests_total", "checkout", "status", "5..", "5m", 0.05)
    return Built(
        name=w.name,
        description="The article's incident: checkout 5xx after checkout 2.4.1 shipped a code "
        "path behind feature_flag.new_checkout whose orders query misses the index; db-primary "
        "times the statement out at ~1.2 s only when the flag is on. Promo banner timeouts are "
        "background noise in healthy and failing requests alike.",
        truth=truth(
            "db-primary",
            "SELECT orders WHERE user_id=$1",
            ("checkout", "2.4.1", "7a3f9c2"),
            "feature_flag.new_checkout",
        ),
        alert=alert_body(
            "CheckoutHighErrorRate",
            expr,
            {"service": "checkout", "severity": "critical", "team": "payments"},
            {
                "summary": "Checkout 5xx rate is above 5%",
                "runbook_url": "https://runbooks.example.com/payments/checkout-5xx",
                "dashboard_url": "https://grafana.example.com/d/checkout?var-service=checkout",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (2) A dependency's own server span times out; the alerting service deployed just before.
@scenario
def build_storefront_inventory_timeout() -> Built:
    w = World("storefront-inventory-timeout", seed=202)
    starts = BASE_TIME + 6 * DAY + 12.381
    received = starts + 30.6
    deploy_at = starts - 360
    onset = starts - 200
    m = RequestMetrics(
        counter="http_server_requests",
        counter_labels=("service", "method", "uri", "code"),
        histogram="http_server_requests_seconds",
        histogram_labels=("service", "method", "uri"),
        buckets=(0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0),
    )
    old = w.service("storefront", "3.7.4", "2b7e9d1", pods=2, metrics=m)
    w.service("storefront", "3.8.0", "8c1f4a7", pods=2, up=deploy_at, metrics=m, stagger=15)
    w.retire(old, deploy_at + 20, stagger=15)
    w.ci_deploy("storefront", "3.8.0", "8c1f4a7", deploy_at)
    w.annotate(
        deploy_at + 2,
        "Deploy storefront v3.8.0 (8c1f4a7) by argo-cd",
        ["deploy", "service:storefront", "env:prod"],
    )
    w.service("catalog", "12.4.0", "f0e1d2c", pods=2, log_style="logfmt")
    w.service("inventory", "5.2.3", "6b5a4c3", pods=3, log_style="logfmt")
    w.service("reviews", "1.3.7", "9a8b7c6", pods=1)
    for t in w.arrivals(starts - 660, received - 1, 0.6):
        pid = w.rnd.randint(1000, 9999)
        sku = f"SKU-{pid}-{w.rnd.choice('ABC')}"
        stuck = t >= onset and w.chance(0.45)
        catalog = http_call(
            w,
            "storefront",
            "catalog",
            "GET",
            "/catalog/items/{id}",
            f"/catalog/items/{pid}",
            w.u(4, 9),
            children=[
                db_call(
                    w,
                    "catalog",
                    "postgresql",
                    "SELECT",
                    "items",
                    "SELECT * FROM items WHERE id=$1",
                    w.u(2, 6),
                    rows=1,
                )
            ],
        )
        if stuck:
            inventory = http_call(
                w,
                "storefront",
                "inventory",
                "GET",
                "/inventory/{sku}",
                f"/inventory/{sku}",
                2000 + w.u(0, 12),
                status=504,
                error=exc("TimeoutError", "stock reservation lock wait exceeded 2000 ms"),
                stack=stack(
                    ("/srv/inventory/handlers.py", 142, "get_stock"),
                    ("/srv/inventory/locks.py", 57, "acquire"),
                    exc_line="TimeoutError: stock reservation lock wait exceeded 2000 ms",
                ),
                server_logs=[
                    (
                        ERROR,
                        "GET /inventory/{sku} timed out waiting for the stock "
                        "reservation lock after 2000 ms",
                    )
                ],
            )
        else:
            inventory = http_call(
                w,
                "storefront",
                "inventory",
                "GET",
                "/inventory/{sku}",
                f"/inventory/{sku}",
                w.u(2, 5),
                children=[
                    db_call(
                        w,
                        "inventory",
                        "postgresql",
                        "SELECT",
                        "stock",
                        "SELECT qty FROM stock WHERE sku=$1 FOR SHARE",
                        w.u(1.5, 5),
                        rows=1,
                    )
                ],
            )
        reviews = http_call(
            w, "storefront", "reviews", "GET", "/reviews/{id}", f"/reviews/{pid}", w.u(6, 15)
        )
        cache = db_call(
            w,
            "storefront",
            "redis",
            "GET",
            "product",
            "GET product:?",
            w.u(0.2, 0.9),
            server="product-cache",
        )
        status = 504 if stuck else 200
        logs = [(ERROR, f"GET /product/{pid} failed: inventory timed out (504)")] if stuck else []
        root = _root(
            "storefront",
            "GET",
            "/product/{id}",
            f"/product/{pid}",
            w.u(3, 7),
            [cache, catalog, inventory, reviews],
            status,
            logs,
        )
        w.request(
            t,
            root,
            {"service": "storefront", "method": "GET", "uri": "/product/{id}", "code": str(status)},
        )
    expr = error_ratio("http_server_requests_total", "storefront", "code", "5..", "2m", 0.02)
    return Built(
        name=w.name,
        description="Storefront 5xx because inventory's own GET /inventory/{sku} handler times "
        "out waiting for a stock reservation lock (2 s). storefront 3.8.0 was deployed 6 "
        "minutes earlier (CI event and annotation) but failing and healthy requests both run "
        "3.8.0: a decoy.",
        truth=truth("inventory", "GET /inventory/{sku}"),
        alert=alert_body(
            "StorefrontHighErrorRate",
            expr,
            {"service": "storefront", "severity": "critical", "team": "web"},
            {
                "summary": "Storefront 5xx ratio above 2%",
                "runbook_url": "https://runbooks.example.com/web/storefront-5xx",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (3) A dependency's canary raises on its new version; healthy requests hit the old pods.
@scenario
def build_cart_pricing_canary() -> Built:
    w = World("cart-pricing-canary", seed=303)
    starts = BASE_TIME + 9 * DAY + 48.117
    received = starts + 33.9
    canary_at = starts - 300
    m = RequestMetrics(
        counter_labels=("service", "route", "status_code"), histogram_labels=("service", "route")
    )
    w.service("cart-api", "6.2.1", "d3c2b1a", pods=3, metrics=m, scrape=30)
    w.service("pricing", "1.14.2", "a41c0d9", pods=3, log_style="logfmt")
    w.service("pricing", "1.15.0", "c0ffee1", pods=1, up=canary_at, log_style="logfmt")
    w.annotate(
        canary_at,
        "Deploy pricing v1.15.0 (c0ffee1) canary 25% by spinnaker",
        ["deploy", "service:pricing", "env:prod"],
    )
    w.service("promotions", "2.3.0", "b0a9f8e", pods=2)
    msg = "no rounding rule for currency 'EUR' in ruleset v2"
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        cart = w.rnd.randint(100_000, 999_999)
        pricing = w.pick("pricing", t)
        broken = pricing.version == "1.15.0"
        children = [
            db_call(
                w,
                "cart-api",
                "redis",
                "HGETALL",
                "cart",
                "HGETALL cart:?",
                w.u(0.3, 1.2),
                server="cart-store",
            ),
            http_call(
                w,
                "cart-api",
                "promotions",
                "POST",
                "/promotions/apply",
                "/promotions/apply",
                w.u(4, 10),
                flags={"bogo_promo": w.rnd.choice(["on", "off"])},
            ),
        ]
        if broken:
            children.append(
                http_call(
                    w,
                    "cart-api",
                    "pricing",
                    "POST",
                    "/price/quote",
                    "/price/quote",
                    w.u(3, 6),
                    status=500,
                    instance=pricing,
                    error=exc("pricing.rules.RuleError", msg),
                    stack=stack(
                        ("/app/pricing/api.py", 88, "quote"),
                        ("/app/pricing/rules.py", 213, "round_total"),
                        exc_line=f"pricing.rules.RuleError: {msg}",
                    ),
                    server_logs=[(ERROR, f"quote failed: RuleError: {msg}")],
                    children=[Call("pricing", "load ruleset", ms=w.u(0.4, 1.0))],
                )
            )
        else:
            children.append(
                http_call(
                    w,
                    "cart-api",
                    "pricing",
                    "POST",
                    "/price/quote",
                    "/price/quote",
                    w.u(4, 9),
                    instance=pricing,
                    children=[Call("pricing", "load ruleset", ms=w.u(0.4, 1.0))],
                )
            )
            children.append(
                db_call(
                    w,
                    "cart-api",
                    "redis",
                    "HSET",
                    "cart",
                    "HSET cart:? ...",
                    w.u(0.3, 1.0),
                    server="cart-store",
                )
            )
        status = 502 if broken else 200
        logs = [(ERROR, "POST /cart/items failed: pricing answered 500")] if broken else []
        root = _root(
            "cart-api",
            "POST",
            "/cart/items",
            "/cart/items",
            w.u(2, 4),
            children,
            status,
            logs,
            attrs={"url.query": f"cart={cart}"},
        )
        w.request(
            t, root, {"service": "cart-api", "route": "/cart/items", "status_code": str(status)}
        )
    expr = error_ratio("http_requests_total", "cart-api", "status_code", "5..", "5m", 0.05)
    return Built(
        name=w.name,
        description="cart-api 5xx: the pricing 1.15.0 canary (one pod of four, announced by a "
        "Grafana annotation and visible in build_info) raises RuleError on every quote; "
        "requests served by the 1.14.2 pods succeed.",
        truth=truth("pricing", "POST /price/quote", ("pricing", "1.15.0", "c0ffee1")),
        alert=alert_body(
            "CartApiErrors",
            expr,
            {"service": "cart-api", "severity": "critical", "team": "basket"},
            {
                "summary": "cart-api is failing more than 5% of requests",
                "dashboard_url": "https://grafana.example.com/d/cart-api",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (4) Latency, no errors: the culprit is two hops down (search-api -> planner -> shard).
@scenario
def build_search_latency_two_hops() -> Built:
    w = World("search-latency-two-hops", seed=404)
    starts = BASE_TIME + 12 * DAY + 5.902
    received = starts + 30.2
    onset = starts - 300
    m = RequestMetrics(
        counter_labels=("service", "route", "status"),
        histogram_labels=("service", "route"),
        buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    )
    w.service("search-api", "11.0.2", "e4d3c2b", pods=3, metrics=m)
    w.service("query-planner", "2.8.1", "1c2d3e4", pods=2)
    shards = w.service("index-shard", "0.31.4", "7f6e5d4", pods=4)
    w.service("ranker", "5.0.0", "aa11bb2", pods=2)
    w.annotate(starts - 420, "Deploy billing v2.0.1 (77ab3c9)", ["deploy", "service:billing"])
    shard_names = ["products-3", "products-5", "products-7", "products-9"]
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        compacting = t >= onset and w.chance(0.45)
        fan = []
        for pod, shard in zip(shards, shard_names, strict=True):
            slow = compacting and shard == "products-7"
            fan.append(
                grpc_call(
                    w,
                    "query-planner",
                    "index-shard",
                    "index.v1.Shard/Query",
                    w.u(1300, 2400) if slow else w.u(22, 48),
                    instance=pod,
                    server_attrs={"index.shard": shard, "index.segments": 41 if slow else 12},
                )
            )
        plan = grpc_call(
            w, "search-api", "query-planner", "planner.v1.Planner/Plan", w.u(3, 8), children=fan
        )
        plan.children[0].parallel = True
        rank = http_call(w, "search-api", "ranker", "POST", "/rank", "/rank", w.u(14, 30))
        cache = db_call(
            w,
            "search-api",
            "redis",
            "GET",
            "results",
            "GET results:?",
            w.u(0.2, 0.8),
            server="search-cache",
        )
        root = _root("search-api", "GET", "/search", "/search", w.u(2, 5), [cache, plan, rank], 200)
        w.request(t, root, {"service": "search-api", "route": "/search", "status": "200"})
    expr = latency_quantile(
        0.99, "http_request_duration_seconds", 'service="search-api"', "le", 1.0
    )
    return Built(
        name=w.name,
        description="search-api p99 above 1 s with no errors anywhere: index shard products-7 "
        "is compacting and its index.v1.Shard/Query takes 1.3-2.4 s in 45% of requests, two "
        "hops below the alerting service (search-api -> query-planner fan-out -> index-shard).",
        truth=truth("index-shard", "index.v1.Shard/Query"),
        alert=alert_body(
            "SearchLatencyHigh",
            expr,
            {"service": "search-api", "severity": "warning", "team": "search"},
            {
                "summary": "search-api p99 latency above 1s",
                "runbook_url": "https://runbooks.example.com/search/latency",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (5) Saturation without errors: a connection pool wait dominates the slow requests.
@scenario
def build_payments_pool_saturation() -> Built:
    w = World("payments-pool-saturation", seed=505)
    starts = BASE_TIME + 15 * DAY + 21.45
    received = starts + 31.7
    onset = starts - 280
    m = RequestMetrics(
        counter="http_server_requests",
        counter_labels=(
            "service",
            "http_request_method",
            "http_route",
            "http_response_status_code",
        ),
        histogram="http_server_request_duration_seconds",
        histogram_labels=("service", "http_request_method", "http_route"),
        buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
    )
    w.service("payments-api", "9.3.0", "5d6e7f8", pods=3, metrics=m, log_style="logfmt")
    risk_old = w.service("risk", "3.3.1", "0c9b8a7", pods=2)
    risk_at = starts - 480
    w.service("risk", "3.3.2", "4e5f6a7", pods=2, up=risk_at, stagger=20)
    w.retire(risk_old, risk_at + 25, stagger=20)
    w.ci_deploy("risk", "3.3.2", "4e5f6a7", risk_at)
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        saturated = t >= onset and w.chance(0.55)
        wait = w.u(600, 1500) if saturated else (w.u(2, 30) if t >= onset else w.u(0.05, 0.4))
        logs = []
        if saturated:
            logs.append(
                (
                    WARN,
                    f"pool ledger-primary exhausted: waited {wait:.0f} ms for a "
                    "connection (20/20 in use)",
                )
            )
        children = [
            http_call(w, "payments-api", "risk", "POST", "/risk/score", "/risk/score", w.u(8, 18)),
            Call(
                "payments-api",
                "connection_pool.acquire",
                ms=wait,
                attrs={
                    "db.client.connection.pool.name": "ledger-primary",
                    "db.client.connection.pool.max": 20,
                    "db.system.name": "postgresql",
                },
                logs=logs,
            ),
            db_call(
                w,
                "payments-api",
                "postgresql",
                "INSERT",
                "payments",
                "INSERT INTO payments (id, amount, currency) VALUES ($1, $2, $3)",
                w.u(3, 8),
                server="ledger-primary",
            ),
            db_call(
                w,
                "payments-api",
                "postgresql",
                "UPDATE",
                "balances",
                "UPDATE balances SET amount = amount - $1 WHERE account=$2",
                w.u(2, 6),
                server="ledger-primary",
            ),
            Call(
                "payments-api",
                "payments.created publish",
                SpanKind.PRODUCER,
                w.u(0.8, 2),
                attrs={
                    "messaging.system": "kafka",
                    "messaging.destination.name": "payments.created",
                    "messaging.operation.type": "publish",
                },
            ),
        ]
        root = _root(
            "payments-api", "POST", "/v1/payments", "/v1/payments", w.u(2, 4), children, 201
        )
        w.request(
            t,
            root,
            {
                "service": "payments-api",
                "http_request_method": "POST",
                "http_route": "/v1/payments",
                "http_response_status_code": "201",
            },
        )
    expr = latency_quantile(
        0.95,
        "http_server_request_duration_seconds",
        'service="payments-api",http_route="/v1/payments"',
        "le",
        0.5,
    )
    return Built(
        name=w.name,
        description="payments-api p95 above 500 ms, no errors: the ledger-primary connection "
        "pool is exhausted and connection_pool.acquire waits 0.6-1.5 s in 55% of requests. "
        "risk 3.3.2 was deployed 8 minutes earlier (CI event): on the path, but not the cause.",
        truth=truth("payments-api", "connection_pool.acquire"),
        alert=alert_body(
            "PaymentsLatencyHigh",
            expr,
            {"service": "payments-api", "severity": "critical", "team": "payments"},
            {
                "summary": "POST /v1/payments p95 above 500ms",
                "runbook_url": "https://runbooks.example.com/payments/latency",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (6) An error-log storm from a service not on the failing traces; the cause is elsewhere.
@scenario
def build_gateway_log_storm() -> Built:
    w = World("gateway-log-storm", seed=606)
    starts = BASE_TIME + 18 * DAY + 44.02
    received = starts + 30.9
    recs_at = starts - 540
    onset = starts - 240
    m = RequestMetrics(
        counter_labels=("service", "route", "status"), histogram_labels=("service", "route")
    )
    w.service("api-gateway", "1.22.3", "3a4b5c6", pods=2, metrics=m)
    recs_old = w.service("recommendations", "6.9.2", "8d9e0f1", pods=2, log_style="logfmt")
    w.service(
        "recommendations", "7.0.0", "5e6f7a8", pods=2, up=recs_at, log_style="logfmt", stagger=10
    )
    w.retire(recs_old, recs_at + 15, stagger=10)
    w.annotate(
        recs_at, "Deploy recommendations v7.0.0 (5e6f7a8)", ["deploy", "service:recommendations"]
    )
    w.service("content", "4.0.2", "c1d2e3f", pods=1)
    w.service("orders", "4.4.0", "2f3e4d5", pods=2, log_style="logfmt")
    w.service("fulfillment", "2.0.9", "9c8d7e6", pods=2)
    conflict = "optimistic lock failed on warehouse slot after 3 retries"
    t = recs_at
    while t < received:
        t += w.u(0.2, 0.6)
        w.log(
            "recommendations",
            t,
            ERROR,
            "failed to load model recs-v7 from model-store:8500: connection refused",
        )
    for t in w.arrivals(starts - 660, received - 1, 0.75):
        if w.chance(0.55):
            user = w.rnd.randint(1, 500_000)
            broken = t >= recs_at + 20 and w.chance(0.85)
            recs = http_call(
                w,
                "api-gateway",
                "recommendations",
                "GET",
                "/recs/{user}",
                f"/recs/{user}",
                w.u(1, 3) if broken else w.u(12, 30),
                status=503 if broken else 200,
                error=exc(
                    "ConnectionRefusedError", "[Errno 111] connect to model-store:8500 refused"
                )
                if broken
                else None,
            )
            content = http_call(
                w, "api-gateway", "content", "GET", "/content/home", "/content/home", w.u(4, 10)
            )
            logs = (
                [(ERROR, "recommendations unavailable (503), serving fallback carousel")]
                if broken
                else []
            )
            root = _root(
                "api-gateway",
                "GET",
                "/api/home",
                "/api/home",
                w.u(1, 3),
                [content, recs],
                200,
                logs,
            )
            w.request(t, root, {"service": "api-gateway", "route": "/api/home", "status": "200"})
            continue
        order = w.rnd.randint(1_000_000, 9_999_999)
        failed = t >= onset and w.chance(0.35)
        create = grpc_call(
            w,
            "orders",
            "fulfillment",
            "fulfillment.v1.Reservations/Create",
            w.u(30, 60) if failed else w.u(8, 20),
            code=10 if failed else 0,
            error=exc("fulfillment.errors.ReservationConflict", conflict) if failed else None,
            server_logs=[(ERROR, f"reservation failed: {conflict}")] if failed else [],
            server_attrs={"warehouse.id": w.rnd.choice(["ams-1", "ams-2", "fra-1"])},
        )
        orders_children = [
            db_call(
                w,
                "orders",
                "postgresql",
                "INSERT",
                "orders",
                "INSERT INTO orders (id, user_id, total) VALUES ($1, $2, $3)",
                w.u(2, 6),
                server="orders-db",
            ),
            create,
        ]
        orders = http_call(
            w,
            "api-gateway",
            "orders",
            "POST",
            "/orders",
            "/orders",
            w.u(3, 6),
            children=orders_children,
            status=500 if failed else 201,
            server_logs=[(ERROR, f"create order {order} failed: fulfillment ABORTED")]
            if failed
            else [],
        )
        status = 502 if failed else 201
        logs = [(ERROR, "upstream orders returned 500 for POST /api/orders")] if failed else []
        root = _root(
            "api-gateway", "POST", "/api/orders", "/api/orders", w.u(1, 3), [orders], status, logs
        )
        w.request(
            t, root, {"service": "api-gateway", "route": "/api/orders", "status": str(status)}
        )
    expr = error_ratio("http_requests_total", "api-gateway", "status", "5..", "5m", 0.05)
    return Built(
        name=w.name,
        description="api-gateway 5xx on POST /api/orders because fulfillment's Reservations/"
        "Create aborts on optimistic-lock conflicts. Meanwhile recommendations 7.0.0 (deployed "
        "9 minutes earlier) cannot load its model: an error-log storm in recommendations and in "
        "the gateway's own error lines, on home-page requests the gateway still answers 200.",
        truth=truth("fulfillment", "fulfillment.v1.Reservations/Create"),
        alert=alert_body(
            "GatewayHighErrorRate",
            expr,
            {"service": "api-gateway", "severity": "critical", "team": "edge"},
            {
                "summary": "api-gateway 5xx ratio above 5%",
                "runbook_url": "https://runbooks.example.com/edge/gateway-5xx",
            },
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (7) No exemplars at all: the gatherer must fall back to a TraceQL search.
@scenario
def build_notifications_no_exemplars() -> Built:
    w = World("notifications-no-exemplars", seed=707)
    starts = BASE_TIME + 21 * DAY + 9.33
    received = starts + 31.1
    onset = starts - 260
    m = RequestMetrics(
        counter="notifications",
        counter_labels=("service", "channel", "outcome"),
        histogram="notification_send_duration_seconds",
        histogram_labels=("service", "channel"),
        exemplars=False,
    )
    w.service("notification-svc", "2.2.0", "6a7b8c9", pods=2, metrics=m, scrape=30)
    w.service("email-gateway", "1.7.4", "d9e8f7a", pods=2, log_style="logfmt")
    w.service("user-prefs", "0.9.1", "0a1b2c3", pods=1)
    for t in w.arrivals(starts - 660, received - 1, 0.6):
        user = w.rnd.randint(1, 2_000_000)
        limited = t >= onset and w.chance(0.4)
        provider = Call(
            "email-gateway",
            "POST /v3/mail/send",
            SpanKind.CLIENT,
            w.u(15, 40) if limited else w.u(70, 180),
            attrs={
                "http.request.method": "POST",
                "url.full": "https://api.mailprovider.example/v3/mail/send",
                "server.address": "api.mailprovider.example",
                "server.port": 443,
                "http.response.status_code": 429 if limited else 202,
            },
            status_error="HTTP 429" if limited else None,
        )
        children = [
            Call(
                "email-gateway",
                "render template",
                ms=w.u(3, 6),
                attrs={"template.name": "order_shipped_v3"},
            ),
            http_call(
                w,
                "email-gateway",
                "user-prefs",
                "GET",
                "/prefs/{user}",
                f"/prefs/{user}",
                w.u(3, 7),
            ),
            provider,
        ]
        send = http_call(
            w,
            "notification-svc",
            "email-gateway",
            "POST",
            "/v1/send",
            "/v1/send",
            w.u(2, 4),
            children=children,
            status=503 if limited else 202,
            error=exc(
                "mailgw.provider.RateLimitExceeded",
                "provider quota exhausted: 429 Too Many Requests (retry after 60s)",
            )
            if limited
            else None,
            server_logs=[(ERROR, "provider rejected send: 429 Too Many Requests, quota exhausted")]
            if limited
            else [],
        )
        status = 502 if limited else 202
        logs = (
            [(ERROR, "notification delivery failed channel=email: email-gateway answered 503")]
            if limited
            else []
        )
        root = _root(
            "notification-svc", "POST", "/notify", "/notify", w.u(2, 4), [send], status, logs
        )
        w.request(
            t,
            root,
            {
                "service": "notification-svc",
                "channel": "email",
                "outcome": "failure" if limited else "success",
            },
        )
    expr = error_ratio("notifications_total", "notification-svc", "outcome", "failure", "5m", 0.1)
    return Built(
        name=w.name,
        description="notification-svc failures with no exemplars (its metrics carry none), so "
        "the traces come from Tempo's TraceQL search: email-gateway's call to the mail provider "
        "is answered 429 once the quota is exhausted.",
        truth=truth("email-gateway", "POST /v3/mail/send"),
        alert=alert_body(
            "NotificationsFailing",
            expr,
            {"service": "notification-svc", "severity": "warning", "team": "messaging"},
            {"summary": "More than 10% of notifications fail"},
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (8) Two simultaneous, independent regressions.
@scenario
def build_booking_two_regressions() -> Built:
    w = World("booking-two-regressions", seed=808)
    starts = BASE_TIME + 24 * DAY + 27.5
    received = starts + 30.4
    onset = starts - 270
    m = RequestMetrics()
    w.service("booking-api", "5.6.0", "b1c2d3e", pods=3, metrics=m, log_style="logfmt", scrape=15)
    w.service("seat-map", "3.0.1", "e5f6a7b", pods=2)
    w.service("loyalty", "1.12.0", "f7e6d5c", pods=2, log_style="logfmt")
    w.service("flights", "8.1.3", "a9b8c7d", pods=2)
    seat_msg = "seat row 31 out of range for layout A321neo-v2"
    dup_msg = 'duplicate key value violates unique constraint "accruals_booking_id_key"'
    turn = 0
    for t in w.arrivals(starts - 660, received - 1, 0.8):
        flight = f"LH{w.rnd.randint(100, 999)}"
        failing = t >= onset and w.chance(0.35)
        kind = ""
        if failing:
            kind = "seat" if turn % 2 == 0 else "loyalty"
            turn += 1
        children = [
            http_call(
                w,
                "booking-api",
                "flights",
                "GET",
                "/flights/{id}",
                f"/flights/{flight}",
                w.u(5, 12),
            ),
        ]
        if kind == "seat":
            children.append(
                http_call(
                    w,
                    "booking-api",
                    "seat-map",
                    "GET",
                    "/seatmap/{flight}",
                    f"/seatmap/{flight}",
                    w.u(4, 9),
                    status=500,
                    error=exc("IndexError", seat_msg),
                    stack=stack(
                        ("/app/seatmap/layout.py", 77, "seat_at"),
                        exc_line=f"IndexError: {seat_msg}",
                    ),
                )
            )
        else:
            children.append(
                http_call(
                    w,
                    "booking-api",
                    "seat-map",
                    "GET",
                    "/seatmap/{flight}",
                    f"/seatmap/{flight}",
                    w.u(7, 16),
                )
            )
            children.append(
                db_call(
                    w,
                    "booking-api",
                    "postgresql",
                    "INSERT",
                    "bookings",
                    "INSERT INTO bookings (id, flight, seat) VALUES ($1, $2, $3)",
                    w.u(3, 7),
                    server="booking-db",
                )
            )
            accrue = [
                db_call(
                    w,
                    "loyalty",
                    "postgresql",
                    "INSERT",
                    "accruals",
                    "INSERT INTO accruals (booking_id, miles) VALUES ($1, $2)",
                    w.u(2, 5),
                    server="loyalty-db",
                    error=exc("psycopg.errors.UniqueViolation", dup_msg)
                    if kind == "loyalty"
                    else None,
                )
            ]
            children.append(
                http_call(
                    w,
                    "booking-api",
                    "loyalty",
                    "POST",
                    "/loyalty/accrue",
                    "/loyalty/accrue",
                    w.u(3, 6),
                    children=accrue,
                    status=500 if kind == "loyalty" else 200,
                    error=exc("psycopg.errors.UniqueViolation", dup_msg)
                    if kind == "loyalty"
                    else None,
                    server_logs=[(ERROR, f"accrual failed: UniqueViolation: {dup_msg}")]
                    if kind == "loyalty"
                    else [],
                )
            )
        status = 500 if kind else 201
        logs = [(ERROR, f"POST /bookings failed in {kind}: status=500")] if kind else []
        root = _root(
            "booking-api", "POST", "/bookings", "/bookings", w.u(2, 4), children, status, logs
        )
        w.request(t, root, _http_labels("booking-api", "POST", "/bookings", status))
    expr = error_ratio("http_requests_total", "booking-api", "status", "5..", "5m", 0.05)
    return Built(
        name=w.name,
        description="booking-api 5xx from two independent regressions at once: seat-map "
        "raises IndexError for one aircraft layout, and loyalty's accrual insert hits a "
        "unique-constraint violation; the failing requests alternate between the two.",
        truth=truth("seat-map", "GET /seatmap/{flight}", also=[("loyalty", "INSERT accruals")]),
        alert=alert_body(
            "BookingApiErrors",
            expr,
            {"service": "booking-api", "severity": "critical", "team": "travel"},
            {"summary": "booking-api 5xx above 5%"},
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (9) A deploy that only the build-info metric shows, of the culprit's own service.
@scenario
def build_profile_build_info_deploy() -> Built:
    w = World("profile-build-info-deploy", seed=909)
    starts = BASE_TIME + 27 * DAY + 53.08
    received = starts + 31.3
    deploy_at = starts - 420
    m = RequestMetrics(
        counter_labels=("service", "handler", "code"), histogram_labels=("service", "handler")
    )
    old = w.service("profile-svc", "4.1.3", "5a4b3c2", pods=3, metrics=m, scrape=30)
    w.service(
        "profile-svc", "4.2.0", "9e8d7c6", pods=3, up=deploy_at, metrics=m, scrape=30, stagger=40
    )
    w.retire(old, deploy_at + 30, stagger=40)
    w.service("avatar-svc", "2.0.0", "3b4c5d6", pods=2)
    msg = "Object of type Decimal is not JSON serializable"
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        pid = w.rnd.randint(1, 9_000_000)
        inst = w.pick("profile-svc", t)
        balance = w.chance(0.3)
        broken = balance and inst.version == "4.2.0"
        children = [
            db_call(
                w,
                "profile-svc",
                "postgresql",
                "SELECT",
                "profiles",
                "SELECT * FROM profiles WHERE id=$1",
                w.u(3, 8),
                server="profile-db",
                rows=1,
            ),
            http_call(
                w,
                "profile-svc",
                "avatar-svc",
                "GET",
                "/avatars/{id}",
                f"/avatars/{pid}",
                w.u(4, 11),
            ),
            Call(
                "profile-svc",
                "serialize ProfileView",
                ms=w.u(1, 3),
                attrs={
                    "code.function.name": "ProfileView.to_json",
                    "profile.has_loyalty_balance": balance,
                },
                error=exc("TypeError", msg) if broken else None,
                stack=stack(
                    ("/srv/profile/views.py", 61, "to_json"),
                    ("/usr/lib/python3.12/json/encoder.py", 180, "default"),
                    exc_line=f"TypeError: {msg}",
                )
                if broken
                else "",
            ),
        ]
        code = 500 if broken else 200
        logs = [(ERROR, f"GET /v2/profiles/{pid} failed: TypeError: {msg}")] if broken else []
        root = _root(
            "profile-svc",
            "GET",
            "/v2/profiles/{id}",
            f"/v2/profiles/{pid}",
            w.u(1, 3),
            children,
            code,
            logs,
            instance=inst,
        )
        w.request(
            t, root, {"service": "profile-svc", "handler": "/v2/profiles/{id}", "code": str(code)}
        )
    expr = error_ratio("http_requests_total", "profile-svc", "code", "5..", "3m", 0.05)
    return Built(
        name=w.name,
        description="profile-svc 4.2.0 (rolled out 7 minutes before the alert, seen only as "
        "build_info changing: no CI event, no annotation) fails to serialize profiles that "
        "carry a loyalty balance (Decimal) in its own serialize ProfileView span.",
        truth=truth("profile-svc", "serialize ProfileView", ("profile-svc", "4.2.0", "9e8d7c6")),
        alert=alert_body(
            "ProfileServiceErrors",
            expr,
            {"service": "profile-svc", "severity": "critical", "team": "identity"},
            {"summary": "profile-svc 5xx ratio above 5%"},
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# (10) Slow requests whose traces look exactly like the fast ones: the answer is "unknown".
@scenario
def build_reports_unknown_queueing() -> Built:
    w = World("reports-unknown-queueing", seed=1010)
    starts = BASE_TIME + 30 * DAY + 16.6
    received = starts + 30.8
    onset = starts - 330
    m = RequestMetrics(buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0))
    w.service("reports-api", "3.4.4", "8e9f0a1", pods=2, metrics=m)
    for t in w.arrivals(starts - 660, received - 1, 0.7):
        rid = w.rnd.randint(1, 400_000)
        queued = w.u(900, 2100) if t >= onset and w.chance(0.35) else w.u(0, 4)
        children = [
            db_call(
                w,
                "reports-api",
                "postgresql",
                "SELECT",
                "report_rows",
                "SELECT * FROM report_rows WHERE report_id=$1",
                w.u(14, 22),
                server="reports-db",
                rows=w.rnd.randint(40, 60),
            ),
            Call(
                "reports-api",
                "S3.GetObject",
                SpanKind.CLIENT,
                w.u(18, 28),
                attrs={
                    "rpc.system": "aws-api",
                    "rpc.service": "S3",
                    "rpc.method": "GetObject",
                    "aws.s3.bucket": "reports-archive",
                },
            ),
            Call("reports-api", "render pdf", ms=w.u(9, 14)),
        ]
        root = _root(
            "reports-api", "GET", "/reports/{id}", f"/reports/{rid}", w.u(2, 3), children, 200
        )
        w.request(
            t, root, _http_labels("reports-api", "GET", "/reports/{id}", 200), queue_ms=queued
        )
    expr = latency_quantile(
        0.99, "http_request_duration_seconds", 'service="reports-api"', "le", 0.75
    )
    return Built(
        name=w.name,
        description="reports-api p99 above 750 ms, but the slow requests spent their time "
        "queued before the handler (the histogram measures from X-Request-Start; the traces "
        "start at the handler): every operation of the slow traces looks like the fast ones, "
        "no errors, no deploy. The honest answer is unknown.",
        truth=truth(None, None, unknown=True),
        alert=alert_body(
            "ReportsLatencyHigh",
            expr,
            {"service": "reports-api", "severity": "warning", "team": "analytics"},
            {"summary": "reports-api p99 latency above 750ms"},
            starts,
        ),
        starts=starts,
        received_at=received,
        world=w,
    )


# --- recording the gatherer's exchanges ------------------------------------------------------


def _query_dict(items: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for k, v in items:
        if k in out:
            prev = out[k]
            out[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
        else:
            out[k] = v
    return out


def _body(raw: bytes | None, content_type: str) -> tuple[Any, str]:
    if not raw:
        return "", "empty"
    text = raw.decode("utf-8")
    if "json" in content_type:
        try:
            return json.loads(text), "json"
        except ValueError:
            pass
    return text, "text"


def recorder(backend: str, sink: list[dict[str, Any]]) -> Any:
    """Outermost middleware of a double: every request and the answer it got."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        raw = resp.body if isinstance(resp, web.Response) else None
        ctype = resp.headers.get("Content-Type", "")
        body, fmt = _body(raw if isinstance(raw, bytes) else None, ctype)
        if backend == "loki" and fmt == "json" and isinstance(body.get("data"), dict):
            # Loki's query statistics (~4 KB per answer) are never read by the enricher.
            body["data"].pop("stats", None)
        sink.append(
            {
                "backend": backend,
                "method": request.method,
                "path": request.path,
                "query": _query_dict(list(request.query.items())),
                "status": resp.status,
                "content_type": ctype,
                "body_format": fmt,
                "body": body,
            }
        )
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp

    return record


class RecordingDeploys:
    """The CI deploy events the gatherer asked for, answered from the scenario and recorded."""

    def __init__(self, events: list[DeployEvent], sink: list[dict[str, Any]]) -> None:
        self.events = events
        self.sink = sink

    async def recent(self, service: str, since: datetime, until: datetime) -> list[DeployEvent]:
        found = [e for e in self.events if e.service == service and since <= e.time <= until]
        self.sink.append(
            {
                "backend": "ci",
                "method": "CALL",
                "path": "/deploys/recent",
                "query": {
                    "service": service,
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                },
                "status": 200,
                "content_type": "application/json",
                "body_format": "json",
                "body": [e.model_dump(mode="json") for e in found],
            }
        )
        return found


def exchange_key(x: dict[str, Any]) -> tuple[str, ...]:
    return (x["backend"], x["path"], x["method"], json.dumps(x["query"], sort_keys=True))


def dump_exchanges(exchanges: list[dict[str, Any]]) -> str:
    """One exchange per line, sorted, duplicates dropped: small diffs on regeneration."""
    seen: set[str] = set()
    lines = []
    for x in sorted(exchanges, key=exchange_key):
        s = json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if s not in seen:
            seen.add(s)
            lines.append(s)
    return "[\n" + ",\n".join(lines) + "\n]\n"


def sources_config(urls: dict[str, str]) -> SourcesConfig:
    """The gatherer configuration recordings are made with (and replayed against)."""
    return SourcesConfig.model_validate({k: {"url": v} for k, v in urls.items()})


async def record(b: Built) -> tuple[list[dict[str, Any]], Any]:
    """Load the doubles, run the real Gatherer, return its exchanges and its bundle."""
    exchanges: list[dict[str, Any]] = []
    prom, tempo, loki, grafana = PrometheusDouble(), TempoDouble(), LokiDouble(), GrafanaDouble()
    doubles = {"prometheus": prom, "tempo": tempo, "loki": loki, "grafana": grafana}
    b.world.load(prom, tempo, loki, grafana, until=b.received_at)
    for name, d in doubles.items():
        d.app.middlewares.insert(0, recorder(name, exchanges))
        await d.start()
    try:
        g = Gatherer(
            sources_config({k: d.url for k, d in doubles.items()}),
            deploys=RecordingDeploys(b.world.ci_events, exchanges),
        )
        await g.start()
        try:
            msg = WebhookMessage.model_validate(b.alert)
            bundle = await g.gather(msg, datetime.fromtimestamp(b.received_at, UTC), 8.0)
        finally:
            await g.close()
    finally:
        for d in doubles.values():
            await d.stop()
    return exchanges, bundle


def scenario_yaml(b: Built) -> str:
    doc = {
        "name": b.name,
        "description": b.description,
        "received_at": rfc3339(b.received_at),
        "truth": b.truth,
        "generated_by": "python -m tests.scenarios.generate --only " + b.name,
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=96)


def write(b: Built, exchanges: list[dict[str, Any]], out: Path) -> Path:
    d = out / b.name
    d.mkdir(parents=True, exist_ok=True)
    (d / "scenario.yaml").write_text(scenario_yaml(b), encoding="utf-8")
    (d / "alert.json").write_text(json.dumps(b.alert, indent=2) + "\n", encoding="utf-8")
    (d / "responses.json").write_text(dump_exchanges(exchanges), encoding="utf-8")
    (d / "bundle.json").unlink(missing_ok=True)
    return d


def describe(bundle: Any) -> str:
    culprits = getattr(bundle, "culprits", None) or ([bundle.culprit] if bundle.culprit else [])
    cs = ", ".join(f"{c.service}:{c.operation}" for c in culprits) or "none"
    deploys = bundle.deploy if isinstance(bundle.deploy, list) else [bundle.deploy]
    ds = "; ".join(d.summary for d in deploys if d is not None) or "none"
    return f"culprits [{cs}] deploy [{ds}] missing {len(bundle.missing)}"


def generate(names: Sequence[str], out: Path, quiet: bool = False) -> list[Path]:
    written = []
    for name in names:
        built = SCENARIOS[name]()
        exchanges, bundle = asyncio.run(record(built))
        written.append(write(built, exchanges, out))
        if not quiet:
            size = sum(f.stat().st_size for f in (out / name).iterdir())
            print(f"{name}: {len(exchanges)} exchanges, {size // 1024} KiB; {describe(bundle)}")
            for m in bundle.missing:
                print(f"  missing: {m.source}: {m.what}: {m.reason}")
            facts = evidence_facts(bundle, Truth.model_validate(built.truth))
            for fact, present in facts.items():
                if not present:
                    print(f"  warning: the gathered bundle lacks the truth's {fact}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.scenarios.generate", description=__doc__)
    p.add_argument("--only", action="append", default=[], help="scenario name (repeatable)")
    p.add_argument("--out", type=Path, default=HERE, help="directory to write scenarios into")
    p.add_argument("--list", action="store_true", help="list scenario names and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    names = args.only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    generate(names, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
