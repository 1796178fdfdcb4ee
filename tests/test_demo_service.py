"""The checkout demo (compose/demo/app.py), run for real: both roles as subprocesses on free
loopback ports, exporting spans over OTLP/HTTP to a receiver double that decodes the protobuf.

Checks that one request makes one trace across both services (parent link over the HTTP hop),
that /metrics carries exemplars of exported traces in OpenMetrics, that logs are JSON lines
with the same ids, and that the flag new_checkout reproduces the incident: a slow
`SELECT orders` on db-primary and checkout answering 5xx.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

from aiohttp import web  # noqa: E402

from tests.doubles._server import DoubleServer  # noqa: E402
from tests.realstack import free_port, stop_all  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "compose" / "demo"
SLOW_S = 1.0  # the seq scan, as in the incident (>= 1 s) ...
TIMEOUT_S = 0.5  # ... and checkout gives up before it ends
COMMIT = "7a3f9c2"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


# --- the OTLP/HTTP receiver double -------------------------------------------------------------


@dataclass
class RxSpan:
    service: str
    resource: dict[str, Any]
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    status_code: int
    events: list[str]

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver(DoubleServer):
    def __init__(self) -> None:
        self.spans: list[RxSpan] = []
        self.lock = threading.Lock()
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self.traces)

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf"
        msg = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        got = []
        for rs in msg.resource_spans:
            res = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        RxSpan(
                            service=res.get("service.name", ""),
                            resource=res,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attrs={a.key: _value(a.value) for a in s.attributes},
                            status_code=s.status.code,
                            events=[e.name for e in s.events],
                        )
                    )
        with self.lock:
            self.spans.extend(got)
        resp = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=resp.SerializeToString(), content_type="application/x-protobuf")

    def trace(self, trace_id: str) -> list[RxSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def trace_ids(self) -> set[str]:
        with self.lock:
            return {s.trace_id for s in self.spans}

    def wait_for(
        self, trace_id: str, names: set[str], timeout: float = 10.0
    ) -> dict[tuple[str, str], RxSpan]:
        deadline = time.monotonic() + timeout
        while True:
            spans = {(s.service, s.name): s for s in self.trace(trace_id)}
            if names <= {n for _, n in spans}:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id}: wanted {names}, got {sorted(spans)}")
            time.sleep(0.05)


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    rx: OtlpReceiver
    checkout: str
    orders: str
    logs: dict[str, Path]


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited {proc.returncode}:\n{log.read_text()}")
        try:
            if _http("GET", f"{url}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not healthy:\n{log.read_text()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    rx = OtlpReceiver()
    rx_url = rx.start_in_thread()
    tmp = tmp_path_factory.mktemp("demo")
    ports = {"checkout": free_port(), "orders": free_port()}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FEATURE_", "DEMO_"))}
    base.update(
        HOST="127.0.0.1",
        OTEL_EXPORTER_OTLP_ENDPOINT=rx_url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        SERVICE_VERSION="2.4.1",
        GIT_COMMIT=COMMIT,
        DEPLOYMENT_ENVIRONMENT="test",
        SLOW_QUERY_SECONDS=str(SLOW_S),
        FAST_QUERY_SECONDS="0.005",
        SLOW_FRACTION="0.6",
        CHECKOUT_TIMEOUT_SECONDS=str(TIMEOUT_S),
        DEMO_SEED="10",
        PYTHONUNBUFFERED="1",
    )
    envs = {
        "orders": {**base, "DEMO_ROLE": "orders", "PORT": str(ports["orders"])},
        "checkout": {
            **base,
            "DEMO_ROLE": "checkout",
            "PORT": str(ports["checkout"]),
            "ORDERS_URL": f"http://127.0.0.1:{ports['orders']}",
        },
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    files = []
    try:
        for role, env in envs.items():
            logs[role] = tmp / f"{role}.log"
            f = logs[role].open("wb")
            files.append(f)
            procs[role] = subprocess.Popen(
                [sys.executable, "app.py"], cwd=DEMO, env=env, stdout=f, stderr=subprocess.STDOUT
            )
        urls = {r: f"http://127.0.0.1:{p}" for r, p in ports.items()}
        for role in procs:
            _wait_healthy(urls[role], procs[role], logs[role])
        yield Stack(rx, urls["checkout"], urls["orders"], logs)
    finally:
        stop_all(procs.values())
        for f in files:
            f.close()
        rx.stop_thread()


def _set_flag(stack: Stack, value: str) -> None:
    status, _, body = _http("POST", f"{stack.checkout}/flags/new_checkout", value.encode())
    assert status == 200, body
    assert json.loads(body) == {"new_checkout": value == "on"}


def _checkout_many(stack: Stack, n: int) -> list[tuple[int, str]]:
    def one(_: int) -> tuple[int, str]:
        status, headers, _ = _http("POST", f"{stack.checkout}/checkout", b"{}")
        return status, headers["X-Trace-Id"]

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the tests ---------------------------------------------------------------------------------


def test_one_request_is_one_trace_across_both_services(stack: Stack) -> None:
    _set_flag(stack, "off")
    status, headers, body = _http("GET", f"{stack.checkout}/checkout?user_id=42")
    assert status == 200, body
    assert json.loads(body)["orders"][0]["user_id"] == "42"
    trace_id = headers["X-Trace-Id"]
    assert HEX32.match(trace_id)

    spans = stack.rx.wait_for(trace_id, {"GET /checkout", "GET /orders", "SELECT orders"})
    root = spans[("checkout", "GET /checkout")]
    client = spans[("checkout", "GET /orders")]
    server = spans[("orders", "GET /orders")]
    db = spans[("orders", "SELECT orders")]
    # one trace, linked across the HTTP hop: checkout's client span is the orders server span's
    # parent (W3C traceparent), which is the parent of the database call
    assert root.parent_id == ""
    assert client.parent_id == root.span_id
    assert server.parent_id == client.span_id
    assert db.parent_id == server.span_id
    assert {s.trace_id for s in spans.values()} == {trace_id}
    # SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3
    assert (root.kind, client.kind, server.kind, db.kind) == (2, 3, 2, 3)

    assert root.attrs["http.response.status_code"] == 200
    assert root.attrs["feature_flag.new_checkout"] is False
    assert db.attrs["feature_flag.new_checkout"] is False
    assert db.attrs["db.system"] == "postgresql"
    assert db.attrs["server.address"] == "db-primary"
    assert db.attrs["db.statement"].startswith("SELECT")
    assert 0 < db.attrs["db.rows_affected"] < 1000
    assert db.seconds < TIMEOUT_S
    for span in (root, db):
        assert span.resource["service.version"] == "2.4.1"
        assert span.resource["vcs.ref.head.revision"] == COMMIT
        assert span.resource["vcs.revision"] == COMMIT
        assert span.resource["deployment.environment.name"] == "test"


def test_metrics_exemplars_point_at_exported_traces(stack: Stack) -> None:
    _set_flag(stack, "off")
    sent = {tid for _, tid in _checkout_many(stack, 4)}

    status, headers, body = _http(
        "GET", f"{stack.checkout}/metrics", headers={"Accept": OPENMETRICS}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.rstrip().endswith("# EOF")
    bucket = re.compile(
        r'^http_request_duration_seconds_bucket\{[^}]*service="checkout"[^}]*\} \S+ '
        r'# \{trace_id="([0-9a-f]{32})"\} \S+ \S+$',
        re.M,
    )
    exemplars = set(bucket.findall(text))
    assert exemplars, text
    assert re.search(
        r'^http_requests_total\{service="checkout",status="200"\} \S+ # \{trace_id=', text, re.M
    )
    assert re.search(
        r'^build_info\{commit="7a3f9c2",service="checkout",version="2.4.1"\} 1\.0', text, re.M
    )
    assert 'le="2.5"' in text

    # each exemplar names a trace the service exported (the latest requests among them)
    assert exemplars & sent
    deadline = time.monotonic() + 10
    while not exemplars <= stack.rx.trace_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exemplars <= stack.rx.trace_ids()

    # without the Accept header: the Prometheus text format, which has no exemplars
    status, headers, body = _http("GET", f"{stack.orders}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "# {" not in body.decode()
    assert 'http_request_duration_seconds_bucket{le="2.5",service="orders"}' in body.decode()


def test_logs_are_json_lines_with_the_trace_ids(stack: Stack) -> None:
    _set_flag(stack, "off")
    status, headers, _ = _http("POST", f"{stack.checkout}/checkout", b"{}")
    assert status == 200
    trace_id = headers["X-Trace-Id"]
    spans = stack.rx.wait_for(trace_id, {"POST /checkout", "GET /orders", "SELECT orders"})

    for role in ("checkout", "orders"):
        lines = _log_lines(stack.logs[role])  # every line parses as JSON
        assert lines
        for line in lines:
            assert {"ts", "level", "msg", "service", "trace_id", "span_id"} <= line.keys()
            assert line["service"] == role
        mine = [x for x in lines if x["trace_id"] == trace_id]
        assert mine, f"no {role} log line of trace {trace_id}"
        for line in mine:
            assert HEX16.match(line["span_id"])
            assert line["span_id"] in {s.span_id for s in spans.values()}
        access = [x for x in mine if x.get("status") == 200]
        assert access and access[0]["level"] == "info"
    assert any(
        x["span_id"] == spans[("checkout", "POST /checkout")].span_id
        for x in _log_lines(stack.logs["checkout"])
    )


def test_flag_on_makes_select_orders_slow_and_checkout_fail(stack: Stack) -> None:
    _set_flag(stack, "off")
    before = _checkout_many(stack, 8)
    share_off = sum(s >= 500 for s, _ in before) / len(before)
    assert share_off == 0

    _set_flag(stack, "on")
    assert json.loads(_http("GET", f"{stack.checkout}/flags/new_checkout")[2]) == {
        "new_checkout": True
    }
    try:
        started = time.monotonic()
        after = _checkout_many(stack, 16)
        elapsed = time.monotonic() - started
    finally:
        _set_flag(stack, "off")
    failed = [tid for s, tid in after if s >= 500]
    share_on = len(failed) / len(after)
    assert share_on > share_off, after
    assert {s for s, _ in after} <= {200, 504}
    assert elapsed < SLOW_S * 1.15 + 2  # concurrent: the test stays short

    # a failed request: checkout gave up after its timeout while the seq scan went on
    tid = failed[0]
    spans = stack.rx.wait_for(tid, {"POST /checkout", "GET /orders", "SELECT orders"})
    root = spans[("checkout", "POST /checkout")]
    client = spans[("checkout", "GET /orders")]
    db = spans[("orders", "SELECT orders")]
    assert root.attrs["http.response.status_code"] == 504
    assert root.attrs["feature_flag.new_checkout"] is True
    assert root.status_code == 2  # STATUS_CODE_ERROR
    assert client.status_code == 2
    assert TIMEOUT_S <= client.seconds < SLOW_S
    assert db.seconds >= SLOW_S >= 1.0
    assert db.attrs["db.rows_affected"] > 1_000_000
    assert db.attrs["db.system"] == "postgresql"
    assert db.attrs["server.address"] == "db-primary"
    # orders started with the flag off: the value came with the request, as W3C baggage
    assert db.attrs["feature_flag.new_checkout"] is True
    assert "seq scan" in db.events

    slow = [
        x
        for x in _log_lines(stack.logs["orders"])
        if x["trace_id"] == tid and x["msg"].startswith("slow query: seq scan on orders")
    ]
    assert slow and slow[0]["level"] == "warning"
    assert slow[0]["span_id"] == db.span_id
    errors = [x for x in _log_lines(stack.logs["checkout"]) if x["trace_id"] == tid]
    assert any(x["level"] == "error" and x.get("status") == 504 for x in errors)

    # the metrics tell the same: 504s counted, slow requests in the 0.5 s+ buckets
    text = _http("GET", f"{stack.checkout}/metrics", headers={"Accept": OPENMETRICS})[2].decode()
    count = re.search(r'^http_requests_total\{service="checkout",status="504"\} (\S+)', text, re.M)
    assert count and float(count.group(1)) == len(failed)


def test_flag_endpoint_rejects_other_bodies(stack: Stack) -> None:
    status, _, _ = _http("POST", f"{stack.checkout}/flags/new_checkout", b"maybe")
    assert status == 400
    assert json.loads(_http("GET", f"{stack.checkout}/flags/new_checkout")[2]) == {
        "new_checkout": False
    }


def test_settings_from_env() -> None:
    spec = importlib.util.spec_from_file_location("demo_app", DEMO / "app.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_app"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["demo_app"]
    s = mod.Settings.from_env({"FEATURE_NEW_CHECKOUT": "true", "DEMO_ROLE": "orders"})
    assert (s.flag_on, s.role, s.service_name, s.port) == (True, "orders", "orders", 8000)
    s = mod.Settings.from_env({})
    assert (s.flag_on, s.role, s.slow_query_s, s.checkout_timeout_s) == (
        False,
        "checkout",
        1.2,
        1.0,
    )
    assert s.orders_url == "http://orders:8001"
    with pytest.raises(SystemExit):
        mod.Settings.from_env({"DEMO_ROLE": "payments"})
