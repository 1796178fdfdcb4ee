"""In-process replay of the recorded checkout incident: one aiohttp server on a loopback port
answering as Prometheus, Tempo and Loki answered on the real stack.

The answers are the recordings in `enricher/demo/data/` (taken from Prometheus 2.42, Tempo 3.1
and Loki on a real stack, see `data/README.md`), with every timestamp moved by one offset so
the incident happened a minute ago and falls inside the window the pipeline asks about. Only
what the evidence chain asks is served:

- Prometheus `GET|POST /api/v1/query_exemplars`: the selectors of the query (extracted with
  promql-parser, as Prometheus does) matched against the stored series. The failing series is
  the recorded `http_requests_total{status="504"}`, keeping the exemplar whose trace was
  recorded (the others name traces that were not); a healthy `status="200"` series carries two
  exemplars of healthy requests. `query_range` (build info) and `query` answer an empty matrix
  or vector, `rules` no groups.
- Tempo `GET /api/v2/traces/<id>`: the recorded failing trace, and two healthy variants of it
  (same route and spans, their own ids, no errors, the whole request in 30 ms), much as
  `tests/checkout_stack.py` builds them for the end-to-end test; an unknown id is answered
  as Tempo does (200, empty trace). `GET /api/search` finds nothing.
- Loki `GET /loki/api/v1/query_range`: the recorded lines of the failing trace and the
  checkout error lines, filtered by the query's stream selector and pipeline stages.

The logic follows the test doubles in `tests/doubles/`, which contract tests hold to the
recorded answers; it is a copy, since the installed package must not need the tests.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import promql_parser as pp
from aiohttp import web

from enricher.demo.logql import LogQLError, LogQuery

FAILING = "b22fc2a2caac4451e1a7afb90ea05a3b"  # the recorded failing request
HEALTHY = ("1" * 32, "2" * 32)  # healthy requests of the same route (synthesised)
# The recorded alert started this long before the failing request ended.
_STARTS_BEFORE_TRACE_END_S = 26.308


def load(name: str) -> Any:
    """One recorded document from the package's data directory."""
    return json.loads(resources.files("enricher.demo").joinpath("data", name).read_text("utf-8"))


def _b64(h: str) -> str:
    return base64.b64encode(bytes.fromhex(h)).decode()


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [sp for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]


def _shift_trace(doc: dict[str, Any], delta_ns: int) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for sp in _spans(out):
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            sp[key] = str(int(sp[key]) + delta_ns)
        for ev in sp.get("events", []):
            ev["timeUnixNano"] = str(int(ev["timeUnixNano"]) + delta_ns)
    return out


def _healthy_variant(
    doc: dict[str, Any], trace_id: str, total_ns: int = 30_000_000
) -> dict[str, Any]:
    """The same route served well: its own ids, no errors, and the recorded shape squeezed
    into `total_ns` (every span keeps its place and share of the request)."""
    out = copy.deepcopy(doc)
    spans = _spans(out)
    t0 = min(int(sp["startTimeUnixNano"]) for sp in spans)
    t1 = max(int(sp["endTimeUnixNano"]) for sp in spans)
    scale = total_ns / max(1, t1 - t0)
    for sp in spans:
        sp["traceId"] = _b64(trace_id)
        sp["spanId"] = _b64(trace_id[:8] + _hex(sp["spanId"])[8:])
        if sp.get("parentSpanId"):
            sp["parentSpanId"] = _b64(trace_id[:8] + _hex(sp["parentSpanId"])[8:])
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            sp[key] = str(t0 + int((int(sp[key]) - t0) * scale))
        sp["status"] = {}
        sp.pop("events", None)
        for kv in sp.get("attributes", []):
            if kv["key"] == "http.response.status_code":
                kv["value"] = {"intValue": "200"}
            elif kv["key"] == "db.rows_affected":
                kv["value"] = {"intValue": "3"}
            elif kv["key"] == "db.response.status_code":
                kv["value"] = {"stringValue": "00000"}
    return out


# --- Prometheus ---------------------------------------------------------------------------

_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
Selector = tuple[str | None, list[tuple[str, str, str]]]


def _selectors(expr: Any) -> list[Selector]:
    out: list[Selector] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            out.append(
                (node.name, [(m.name, _OPS[str(m.op)], m.value) for m in node.matchers.matchers])
            )

    pp.walk(expr, visit)
    return out


def _label_ok(actual: str, op: str, v: str) -> bool:
    if op == "=":
        return actual == v
    if op == "!=":
        return actual != v
    hit = re.fullmatch(v, actual) is not None
    return hit if op == "=~" else not hit


def _series_match(labels: dict[str, str], sel: Selector) -> bool:
    name, matchers = sel
    if name and labels.get("__name__") != name:
        return False
    return all(_label_ok(labels.get(n, ""), op, v) for n, op, v in matchers)


def _prom_error(msg: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": "bad_data", "error": msg}, status=400)


# --- Loki ---------------------------------------------------------------------------------


def _loki_time(raw: str | None, default: int) -> int:
    """Loki's timestamps: float seconds, integer seconds (<= 10 digits) or nanoseconds."""
    if not raw:
        return default
    if "." in raw:
        return int(float(raw) * 1e9)
    return int(raw) * 10**9 if len(raw) <= 10 else int(raw)


# --- the server ---------------------------------------------------------------------------


@dataclass
class Incident:
    """The recorded incident, moved so that its failing request ended at `trace_end`."""

    delta_s: float
    exemplars: list[dict[str, Any]] = field(default_factory=list)  # [{seriesLabels, exemplars}]
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)  # hex id -> Tempo v2 body
    logs: list[tuple[dict[str, str], int, str, dict[str, str]]] = field(default_factory=list)

    @property
    def starts_at(self) -> float:
        """When the (moved) alert started, in Unix seconds."""
        return self.trace_end - _STARTS_BEFORE_TRACE_END_S

    @property
    def trace_end(self) -> float:
        return max(int(sp["endTimeUnixNano"]) for sp in _spans(self.traces[FAILING]["trace"])) / 1e9


def load_incident(trace_end: float) -> Incident:
    """The recordings, every timestamp moved so the failing request ended at `trace_end`."""
    recorded = load("tempo-trace-v2.json")["trace"]
    end_ns = max(int(sp["endTimeUnixNano"]) for sp in _spans(recorded))
    delta_ns = int(trace_end * 1e9) - end_ns
    inc = Incident(delta_s=delta_ns / 1e9)
    failing = _shift_trace(recorded, delta_ns)
    inc.traces[FAILING] = {"trace": failing, "metrics": {}}
    for n, tid in enumerate(HEALTHY, 1):
        healthy = _healthy_variant(_shift_trace(recorded, delta_ns - n * 2_000_000_000), tid)
        inc.traces[tid] = {"trace": healthy, "metrics": {}}

    # Exemplars: the recorded failing series, with the exemplar whose trace was recorded.
    for s in load("prometheus-query_exemplars-errors.json")["data"]:
        kept = [
            {**e, "timestamp": round(float(e["timestamp"]) + inc.delta_s, 3)}
            for e in s["exemplars"]
            if e["labels"].get("trace_id") in inc.traces
        ]
        if kept:
            inc.exemplars.append({"seriesLabels": dict(s["seriesLabels"]), "exemplars": kept})
            healthy_labels = {**s["seriesLabels"], "status": "200"}
            inc.exemplars.append(
                {
                    "seriesLabels": healthy_labels,
                    "exemplars": [
                        {
                            "labels": {"trace_id": tid},
                            "value": "1",
                            "timestamp": round(kept[0]["timestamp"] - 2.0 * n, 3),
                        }
                        for n, tid in enumerate(HEALTHY, 1)
                    ],
                }
            )

    # Logs: the trace's own lines and the service's error lines, as pushed (labels and
    # structured metadata apart, as Loki stores them), without duplicates.
    seen: set[tuple[int, str]] = set()
    for name in ("loki-by-trace-structured-metadata.json", "loki-service-errors.json"):
        for s in load(name)["data"]["result"]:
            stream = s["stream"]
            labels = {k: v for k, v in stream.items() if k in ("env", "service_name")}
            meta = {k: stream[k] for k in ("trace_id", "span_id") if k in stream}
            for ts, line in s["values"]:
                t = int(ts) + delta_ns
                if (t, line) not in seen:
                    seen.add((t, line))
                    inc.logs.append((labels, t, line, meta))
    return inc


def _detected_level(line: str) -> str:
    first = line.split(" ", 1)[0].strip("[]:").lower()
    return first if first in ("error", "warn", "warning", "info", "debug") else "unknown"


class ReplayBackends:
    """Prometheus, Tempo and Loki of the recorded incident, on one loopback port."""

    def __init__(self, incident: Incident) -> None:
        self.incident = incident
        self.requests = 0
        self.app = web.Application(middlewares=[self._count])
        r = self.app.router
        for path, h in (
            ("/api/v1/query_exemplars", self._exemplars),
            ("/api/v1/query_range", self._prom_empty),
            ("/api/v1/query", self._prom_empty),
        ):
            r.add_get(path, h)
            r.add_post(path, h)
        r.add_get("/api/v1/rules", self._rules)
        r.add_get("/api/v2/traces/{trace_id}", self._trace)
        r.add_get("/api/search", self._search)
        r.add_get("/loki/api/v1/query_range", self._logs)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # Its only client is the in-process service: no reason to wait long for it at exit.
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=1.0)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        return await handler(request)  # type: ignore[no-any-return]

    # --- Prometheus -----------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _exemplars(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            sels = _selectors(pp.parse(p.get("query", "")))
            start = float(p.get("start", "-inf"))
            end = float(p.get("end", "inf"))
        except ValueError as exc:
            return _prom_error(f"parse error: {exc}")
        data = []
        for s in self.incident.exemplars:
            if any(_series_match(s["seriesLabels"], sel) for sel in sels):
                chosen = [e for e in s["exemplars"] if start <= e["timestamp"] <= end]
                if chosen:
                    data.append({"seriesLabels": s["seriesLabels"], "exemplars": chosen})
        return web.json_response({"status": "success", "data": data})

    async def _prom_empty(self, request: web.Request) -> web.Response:
        kind = "matrix" if request.path.endswith("_range") else "vector"
        return web.json_response({"status": "success", "data": {"resultType": kind, "result": []}})

    async def _rules(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"groups": []}})

    # --- Tempo ----------------------------------------------------------------------------

    async def _trace(self, request: web.Request) -> web.Response:
        raw = request.match_info["trace_id"]
        if not re.fullmatch(r"[0-9a-fA-F]{1,32}", raw):
            return web.Response(status=400, text="trace IDs can only contain hex characters")
        body = self.incident.traces.get(raw.lower().zfill(32), {"trace": {}, "metrics": {}})
        return web.json_response(body)

    async def _search(self, request: web.Request) -> web.Response:
        return web.json_response({"traces": [], "metrics": {"completedJobs": 1, "totalJobs": 1}})

    # --- Loki -----------------------------------------------------------------------------

    async def _logs(self, request: web.Request) -> web.Response:
        qs = request.query
        try:
            query = LogQuery(qs.get("query", ""))
            limit = int(qs.get("limit", "100"))
            end = _loki_time(qs.get("end"), 2**63 - 1)
            start = _loki_time(qs.get("start"), end - 3600 * 10**9)
        except (LogQLError, ValueError, re.error) as exc:
            return web.Response(status=400, text=str(exc))
        hits = [
            e for e in self.incident.logs if start <= e[1] < end and query.matches(e[0], e[2], e[3])
        ]
        hits.sort(key=lambda e: e[1], reverse=qs.get("direction", "backward") != "forward")
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for labels, ts, line, meta in hits[:limit]:
            merged = {**labels, **meta, "detected_level": _detected_level(line)}
            streams.setdefault(tuple(sorted(merged.items())), []).append([str(ts), line])
        result = [{"stream": dict(k), "values": v} for k, v in sorted(streams.items())]
        return web.json_response(
            {"status": "success", "data": {"resultType": "streams", "result": result}}
        )
