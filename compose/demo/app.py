"""The checkout demo: a checkout HTTP service and the orders service it depends on, instrumented
with the OpenTelemetry SDK, that reproduce "the checkout incident": after the deploy of checkout
2.4.1 with the feature flag new_checkout on, the `SELECT orders` query on db-primary goes slow
(a seq scan of ~1.1M rows, ~1.2 s) and checkout answers slow and 5xx (it gives up on orders
after 1 s and answers 504).

One image, two roles, chosen by DEMO_ROLE:

  checkout  POST|GET /checkout  calls orders (GET {ORDERS_URL}/orders) with W3C trace context
                                and baggage, so one trace spans both services
            GET|POST /flags/new_checkout   read, or set with the body `on`/`off`
            GET /healthz, GET /metrics
  orders    GET /orders         the dependency: simulates the database call as a client span
                                `SELECT orders` (db.system=postgresql, server.address=db-primary)
            GET|POST /flags/new_checkout, GET /healthz, GET /metrics

Every traced answer carries its trace id in the header X-Trace-Id (`curl -i`).

Telemetry:
  traces   OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), or to
           OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given; neither set: spans are made, not exported
  metrics  /metrics: http_requests_total{service,status}, http_request_duration_seconds{service}
           (buckets to 2.5 s, exemplars carrying trace_id), build_info{service,version,commit};
           OpenMetrics when the Accept header asks for application/openmetrics-text (as
           Prometheus does), else the Prometheus text format
  logs     JSON lines on stdout: ts, level, msg, service, trace_id, span_id (+ fields)

Environment (all optional):
  DEMO_ROLE                   checkout | orders                           (checkout)
  PORT                        listening port                              (8000)
  HOST                        listening address                           (0.0.0.0)
  ORDERS_URL                  where checkout finds orders                 (http://orders:8001)
  OTEL_SERVICE_NAME           service.name                                (the role)
  SERVICE_VERSION             service.version                             (2.4.1)
  GIT_COMMIT                  vcs.ref.head.revision / vcs.revision        (unknown)
  DEPLOYMENT_ENVIRONMENT      deployment.environment(.name)               (demo)
  SERVICE_NAMESPACE           service.namespace                           (shop)
  OTEL_EXPORTER_OTLP_ENDPOINT OTLP/HTTP base URL, e.g. http://tempo:4318  (unset)
  OTEL_BSP_SCHEDULE_DELAY     span batch delay in ms (SDK setting)        (5000)
  FEATURE_NEW_CHECKOUT        the flag's value at start: true/false/on/off (false)
  SLOW_QUERY_SECONDS          the seq scan's duration with the flag on    (1.2)
  FAST_QUERY_SECONDS          the index scan's duration                   (0.015)
  SLOW_FRACTION               share of queries that seq-scan, flag on     (0.7)
  CHECKOUT_TIMEOUT_SECONDS    checkout's timeout on the orders call       (1.0)
  DEMO_SEED                   seed for the random draws (reproducible runs) (unset)

The flag is read by checkout and travels to orders as the W3C baggage entry
`feature_flag.new_checkout`; orders uses its own value when a request carries none. Both
services record it on their spans as `feature_flag.new_checkout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

FLAG = "new_checkout"
FLAG_ATTR = f"feature_flag.{FLAG}"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5)
QUERY = "SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"
SEQ_SCAN_ROWS = 1_110_482

log = logging.getLogger("demo")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "on", "yes", "enabled"}


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


@dataclass
class Settings:
    role: str = "checkout"
    host: str = "0.0.0.0"
    port: int = 8000
    orders_url: str = "http://orders:8001"
    service_name: str = "checkout"
    version: str = "2.4.1"
    commit: str = "unknown"
    environment: str = "demo"
    namespace: str = "shop"
    flag_on: bool = False
    slow_query_s: float = 1.2
    fast_query_s: float = 0.015
    slow_fraction: float = 0.7
    checkout_timeout_s: float = 1.0
    seed: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        role = env.get("DEMO_ROLE", "checkout").strip().lower() or "checkout"
        if role not in {"checkout", "orders"}:
            raise SystemExit(f"DEMO_ROLE must be checkout or orders, not {role!r}")
        seed = env.get("DEMO_SEED", "").strip()
        return cls(
            role=role,
            host=env.get("HOST", "0.0.0.0"),
            port=int(env.get("PORT", "8000")),
            orders_url=env.get("ORDERS_URL", "http://orders:8001").rstrip("/"),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or role,
            version=env.get("SERVICE_VERSION", "2.4.1"),
            commit=env.get("GIT_COMMIT", "unknown"),
            environment=env.get("DEPLOYMENT_ENVIRONMENT", "demo"),
            namespace=env.get("SERVICE_NAMESPACE", "shop"),
            flag_on=_truthy(env.get("FEATURE_NEW_CHECKOUT")),
            slow_query_s=_float(env, "SLOW_QUERY_SECONDS", 1.2),
            fast_query_s=_float(env, "FAST_QUERY_SECONDS", 0.015),
            slow_fraction=_float(env, "SLOW_FRACTION", 0.7),
            checkout_timeout_s=_float(env, "CHECKOUT_TIMEOUT_SECONDS", 1.0),
            seed=int(seed) if seed else None,
        )


# --- logs -------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the ids of the span current when the line was logged."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "service": self.service,
            "trace_id": trace.format_trace_id(ctx.trace_id) if ctx.is_valid else "",
            "span_id": trace.format_span_id(ctx.span_id) if ctx.is_valid else "",
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def emit(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


# --- traces -----------------------------------------------------------------------------------


def setup_tracing(s: Settings) -> TracerProvider:
    resource = Resource.create(
        {
            "service.name": s.service_name,
            "service.version": s.version,
            "service.namespace": s.namespace,
            "deployment.environment": s.environment,
            "deployment.environment.name": s.environment,
            "vcs.ref.head.revision": s.commit,
            "vcs.revision": s.commit,
        }
    )
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        # Reads the endpoint from the environment and adds /v1/traces to the base one.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


# --- metrics ----------------------------------------------------------------------------------


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by status code.",
            ["service", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration in seconds.",
            ["service"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.build_info = Gauge(
            "build_info",
            "The build this service runs.",
            ["service", "version", "commit"],
            registry=self.registry,
        )

    def observe(self, service: str, status: int, seconds: float, trace_id: str) -> None:
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.requests.labels(service=service, status=str(status)).inc(exemplar=exemplar)
        self.duration.labels(service=service).observe(seconds, exemplar=exemplar)

    def render(self, accept: str) -> tuple[bytes, str]:
        if "application/openmetrics-text" in accept:
            return om_exposition.generate_latest(self.registry), om_exposition.CONTENT_TYPE_LATEST
        return text_exposition.generate_latest(self.registry), text_exposition.CONTENT_TYPE_LATEST


# --- the service ------------------------------------------------------------------------------


class Demo:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.flag_on = s.flag_on
        self.rng = random.Random(s.seed)
        self.tracer = trace.get_tracer("compose.demo", s.version)
        self.metrics = Metrics()
        self.metrics.build_info.labels(s.service_name, s.version, s.commit).set(1)
        self.session: ClientSession | None = None

    # middleware: the server span, the request metrics and the access log line
    @web.middleware
    async def instrument(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in {"/metrics", "/healthz"}:
            return await handler(request)
        parent = propagate.extract(request.headers)
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else request.path
        start = time.monotonic()
        token = context.attach(parent)
        try:
            with self.tracer.start_as_current_span(
                f"{request.method} {route_name}",
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": request.method,
                    "http.route": route_name,
                    "url.path": request.path,
                    "server.port": self.s.port,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    response = await handler(request)
                    status = response.status
                except web.HTTPException as exc:
                    status, response = exc.status, exc
                except Exception as exc:
                    span.record_exception(exc)
                    emit(logging.ERROR, f"unhandled error: {exc!r}")
                    status = 500
                    response = web.json_response({"error": "internal error"}, status=500)
                span.set_attribute("http.response.status_code", status)
                ctx = span.get_span_context()
                trace_id = trace.format_trace_id(ctx.trace_id) if ctx.is_valid else ""
                if trace_id:  # the trace to look up in Tempo, for `curl -i` and load generators
                    response.headers["X-Trace-Id"] = trace_id
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                elapsed = time.monotonic() - start
                self.metrics.observe(self.s.service_name, status, elapsed, trace_id)
                emit(
                    logging.ERROR if status >= 500 else logging.INFO,
                    f"{request.method} {request.path} status={status} "
                    f"duration_ms={elapsed * 1000:.0f}",
                    method=request.method,
                    path=request.path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                    **{"service.version": self.s.version, "commit": self.s.commit},
                )
        finally:
            context.detach(token)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "role": self.s.role})

    async def metrics_view(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render(request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = ctype
        return response

    async def flag_get(self, _request: web.Request) -> web.Response:
        return web.json_response({FLAG: self.flag_on})

    async def flag_set(self, request: web.Request) -> web.Response:
        raw = (await request.text()).strip().strip('"').lower()
        if raw in {"on", "true", "1", "enabled"}:
            self.flag_on = True
        elif raw in {"off", "false", "0", "disabled"}:
            self.flag_on = False
        else:
            raise web.HTTPBadRequest(text="body must be on or off\n")
        trace.get_current_span().set_attribute(FLAG_ATTR, self.flag_on)
        emit(logging.WARNING, f"feature flag {FLAG} set to {'on' if self.flag_on else 'off'}")
        return web.json_response({FLAG: self.flag_on})

    # checkout
    async def checkout(self, request: web.Request) -> web.Response:
        span = trace.get_current_span()
        flag = self.flag_on
        span.set_attribute(FLAG_ATTR, flag)
        user_id = request.query.get("user_id") or str(self.rng.randint(1000, 99999))
        span.set_attribute("app.user.id", user_id)
        assert self.session is not None
        url = f"{self.s.orders_url}/orders"
        with self.tracer.start_as_current_span(
            "GET /orders",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "url.full": url,
                FLAG_ATTR: flag,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as client:
            # traceparent (the client span as parent) and the flag as baggage
            headers: dict[str, str] = {}
            propagate.inject(headers, context=baggage.set_baggage(FLAG_ATTR, str(flag).lower()))
            try:
                async with self.session.get(
                    url,
                    params={"user_id": user_id},
                    headers=headers,
                    timeout=ClientTimeout(total=self.s.checkout_timeout_s),
                ) as resp:
                    client.set_attribute("http.response.status_code", resp.status)
                    body = await resp.json(content_type=None) if resp.status < 500 else {}
                    if resp.status >= 500:
                        client.set_status(Status(StatusCode.ERROR, f"HTTP {resp.status}"))
                        emit(logging.ERROR, f"orders answered {resp.status}")
                        return web.json_response({"error": "orders failed"}, status=502)
            except TimeoutError as exc:
                client.record_exception(exc)
                client.set_attribute("error.type", "timeout")
                client.set_status(
                    Status(StatusCode.ERROR, f"orders timed out after {self.s.checkout_timeout_s}s")
                )
                emit(
                    logging.ERROR,
                    f"checkout failed: orders did not answer within {self.s.checkout_timeout_s}s",
                    upstream=url,
                )
                return web.json_response({"error": "orders timed out"}, status=504)
            except OSError as exc:
                client.record_exception(exc)
                client.set_attribute("error.type", type(exc).__name__)
                client.set_status(Status(StatusCode.ERROR, str(exc)))
                emit(logging.ERROR, f"checkout failed: orders unreachable: {exc}", upstream=url)
                return web.json_response({"error": "orders unreachable"}, status=502)
        order_id = f"ord-{self.rng.randint(10**7, 10**8 - 1)}"
        return web.json_response(
            {"order_id": order_id, "user_id": user_id, "orders": body.get("orders", [])}
        )

    # orders
    async def orders(self, request: web.Request) -> web.Response:
        carried = baggage.get_baggage(FLAG_ATTR)
        flag = self.flag_on if carried is None else _truthy(str(carried))
        trace.get_current_span().set_attribute(FLAG_ATTR, flag)
        user_id = request.query.get("user_id", "0")
        seq_scan = flag and self.rng.random() < self.s.slow_fraction
        if seq_scan:
            duration = self.s.slow_query_s * self.rng.uniform(1.0, 1.15)
            rows = SEQ_SCAN_ROWS + self.rng.randint(0, 5000)
        else:
            duration = self.s.fast_query_s * self.rng.uniform(0.6, 1.6)
            rows = self.rng.randint(1, 20)
        with self.tracer.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.system.name": "postgresql",
                "db.name": "shop",
                "db.operation.name": "SELECT",
                "db.collection.name": "orders",
                "db.statement": QUERY,
                "db.query.text": QUERY,
                "server.address": "db-primary",
                "server.port": 5432,
                FLAG_ATTR: flag,
            },
        ) as db:
            await asyncio.sleep(duration)
            db.set_attribute("db.rows_affected", rows)
            if seq_scan:
                db.add_event("seq scan", {"db.plan": "Seq Scan on orders", "db.rows_scanned": rows})
                emit(
                    logging.WARNING,
                    f"slow query: seq scan on orders ({rows / 1e6:.1f}M rows), index not used",
                    db_statement=QUERY,
                    duration_ms=round(duration * 1000, 1),
                    rows=rows,
                )
        n = min(rows, 3)
        orders = [{"id": f"ord-{user_id}-{i}", "user_id": user_id} for i in range(n)]
        return web.json_response({"orders": orders, "rows": rows})

    # app
    async def _on_startup(self, _app: web.Application) -> None:
        self.session = ClientSession()

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.instrument])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get(f"/flags/{FLAG}", self.flag_get)
        app.router.add_post(f"/flags/{FLAG}", self.flag_set)
        if self.s.role == "checkout":
            app.router.add_post("/checkout", self.checkout)
            app.router.add_get("/checkout", self.checkout)
        else:
            app.router.add_get("/orders", self.orders)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app


def main() -> None:
    s = Settings.from_env()
    setup_logging(s.service_name)
    provider = setup_tracing(s)
    demo = Demo(s)
    emit(
        logging.INFO,
        f"{s.service_name} {s.version} ({s.commit}) listening on {s.host}:{s.port}",
        role=s.role,
        **{FLAG_ATTR: s.flag_on},
    )
    try:
        web.run_app(demo.app(), host=s.host, port=s.port, print=None, access_log=None)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
