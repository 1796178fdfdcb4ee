"""A Tempo double: OTLP/HTTP JSON ingest, trace by id (v1, v2) and TraceQL search.

Answers in exactly the shapes recorded from Tempo 3.1 (fixtures/real/checkout-slow-query):
trace JSON in protobuf's JSON mapping (base64 ids, int64 as strings, enum names, empty
`status: {}`), a missing trace as 200 `{"trace":{},"metrics":{}}` on v2 and an empty 404 on
v1, a malformed id as 400 text/plain, search hits with hex ids (leading zeros stripped).
The TraceQL subset understood: `resource.service.name = "x"`, `status = error|ok|unset`,
`status != error`, `duration > 500ms` / `< 1.5s`, joined by `&&`.

Ingest lag, as real Tempo has it: a trace becomes queryable only some time after its spans
arrive. With `ingest_lag` set, a trace is invisible until `clock()` has passed the end of its
last span (when an SDK would have sent it) plus the lag; `hide_until` sets that time for one
trace. Until then it is answered exactly like a trace Tempo never had (v2 200 with an empty
trace, v1 404, absent from search). `clock` is settable; `run_clock(at)` makes it run from
`at` in real time, so a retry a moment later can find the trace.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.doubles._server import DoubleServer, answer

KIND_NAMES = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
STATUS_NAMES = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}
_COND = re.compile(
    r"^\s*(resource\.service\.name|status|duration)\s*(=|!=|>=|<=|>|<)\s*(\"[^\"]*\"|[\w.]+)\s*$"
)


def hex_to_b64(h: str, nbytes: int) -> str:
    return base64.b64encode(bytes.fromhex(h.zfill(2 * nbytes))).decode()


def _tempo_value(v: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON AnyValue -> protobuf JSON mapping (int64 as string)."""
    if "intValue" in v:
        return {"intValue": str(int(v["intValue"]))}
    if "arrayValue" in v:
        return {
            "arrayValue": {"values": [_tempo_value(x) for x in v["arrayValue"].get("values", [])]}
        }
    if "kvlistValue" in v:
        return {"kvlistValue": {"values": _tempo_attrs(v["kvlistValue"].get("values", []))}}
    return dict(v)


def _tempo_attrs(kvs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"key": kv["key"], "value": _tempo_value(kv.get("value", {}))} for kv in kvs]


def _enum(v: Any, names: dict[int, str]) -> str:
    return names.get(v, str(v)) if isinstance(v, int) else str(v)


def to_tempo_span(sp: dict[str, Any]) -> dict[str, Any]:
    """One OTLP/JSON span (hex ids, int enums) in Tempo's trace-by-id JSON form."""
    out: dict[str, Any] = {
        "traceId": hex_to_b64(sp["traceId"], 16),
        "spanId": hex_to_b64(sp["spanId"], 8),
    }
    if sp.get("parentSpanId"):
        out["parentSpanId"] = hex_to_b64(sp["parentSpanId"], 8)
    if sp.get("flags"):
        out["flags"] = sp["flags"]
    out["name"] = sp.get("name", "")
    out["kind"] = _enum(sp.get("kind", 0), KIND_NAMES)
    out["startTimeUnixNano"] = str(int(sp["startTimeUnixNano"]))
    out["endTimeUnixNano"] = str(int(sp["endTimeUnixNano"]))
    if sp.get("attributes"):
        out["attributes"] = _tempo_attrs(sp["attributes"])
    if sp.get("events"):
        out["events"] = [
            {
                "timeUnixNano": str(int(e.get("timeUnixNano", 0))),
                "name": e.get("name", ""),
                **({"attributes": _tempo_attrs(e["attributes"])} if e.get("attributes") else {}),
            }
            for e in sp["events"]
        ]
    st = sp.get("status") or {}
    status: dict[str, Any] = {}
    if st.get("message"):
        status["message"] = st["message"]
    if st.get("code"):
        status["code"] = _enum(st["code"], STATUS_NAMES)
    out["status"] = status
    return out


class _Stored:
    def __init__(self, resource: dict[str, Any], scope: dict[str, Any], span: dict[str, Any]):
        self.resource = resource
        self.scope = scope
        self.span = span

    @property
    def service(self) -> str:
        for kv in self.resource.get("attributes", []):
            if kv.get("key") == "service.name":
                return str(kv.get("value", {}).get("stringValue", ""))
        return ""

    @property
    def error(self) -> bool:
        code = (self.span.get("status") or {}).get("code", 0)
        return code in (2, "STATUS_CODE_ERROR")


class TempoDouble(DoubleServer):
    def __init__(
        self,
        latency: float = 0.0,
        ingest_lag: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.traces: dict[str, list[_Stored]] = defaultdict(list)
        self.ingest_lag = ingest_lag
        self.clock = clock
        # Per trace: not queryable before this time (overrides the span-derived time).
        self.visible_from: dict[str, float] = {}
        super().__init__(latency)

    # --- ingest lag -----------------------------------------------------------------------

    def run_clock(self, at: float) -> None:
        """The clock reads `at` now and advances in real time from here."""
        t0 = time.monotonic()
        self.clock = lambda: at + (time.monotonic() - t0)

    def hide_until(self, trace_id: str, t: float) -> None:
        self.visible_from[trace_id.lower().zfill(32)] = t

    def visible(self, tid: str) -> bool:
        t = self.visible_from.get(tid)
        if t is None:
            spans = self.traces.get(tid)
            if not self.ingest_lag or not spans:
                return True
            t = max(int(st.span["endTimeUnixNano"]) for st in spans) / 1e9 + self.ingest_lag
        return self.clock() >= t

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._ingest)
        app.router.add_get("/api/v2/traces/{trace_id}", self._trace_v2)
        app.router.add_get("/api/traces/{trace_id}", self._trace_v1)
        app.router.add_get("/api/search", self._search)
        app.router.add_get("/api/echo", self._echo)
        app.router.add_get("/ready", self._ready)

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, otlp: dict[str, Any]) -> int:
        """Store an OTLP/JSON ExportTraceServiceRequest; returns the number of spans."""
        n = 0
        for rs in otlp.get("resourceSpans", []):
            resource = rs.get("resource") or {}
            for ss in rs.get("scopeSpans", []):
                scope = ss.get("scope") or {}
                for sp in ss.get("spans", []):
                    tid = str(sp["traceId"]).lower()
                    if not re.fullmatch(r"[0-9a-f]{32}", tid):
                        raise ValueError(f"invalid trace id {tid!r}")
                    self.traces[tid].append(_Stored(resource, scope, sp))
                    n += 1
        return n

    async def _ingest(self, request: web.Request) -> web.Response:
        if request.content_type == "application/x-protobuf":
            return await self._ingest_protobuf(request)
        try:
            body = await request.json()
            self.ingest(body)
        except (ValueError, KeyError, TypeError) as exc:
            return web.Response(status=400, text=str(exc), content_type="text/plain")
        return answer({"partialSuccess": {}})

    async def _ingest_protobuf(self, request: web.Request) -> web.Response:
        """OTLP/HTTP protobuf, as the OpenTelemetry SDKs' exporters send it (gzipped or not);
        answered with an empty ExportTraceServiceResponse in protobuf, as Tempo does."""
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        body = await request.read()
        try:
            # aiohttp already undoes Content-Encoding: gzip; a body still gzipped is unwrapped
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            self.ingest(otlp_json_from_protobuf(body))
        except (DecodeError, OSError, ValueError, KeyError) as exc:
            return web.Response(status=400, text=str(exc), content_type="text/plain")
        return web.Response(
            body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    # --- trace by id ----------------------------------------------------------------------

    def _check_id(self, raw: str) -> str | web.Response:
        for i, c in enumerate(raw):
            if c not in "0123456789abcdefABCDEF":
                return answer(
                    f"trace IDs can only contain hex characters: invalid character "
                    f"'{c}' at position {i + 1}",
                    400,
                    "text/plain; charset=utf-8",
                )
        if len(raw) > 32:
            return answer(
                "trace IDs can't be larger than 128 bits\n", 400, "text/plain; charset=utf-8"
            )
        return raw.lower().zfill(32)

    def resource_spans(self, tid: str) -> list[dict[str, Any]]:
        """The trace in Tempo's JSON form; none while it is not queryable yet."""
        groups: dict[str, dict[str, Any]] = {}
        for st in self.traces.get(tid, []) if self.visible(tid) else []:
            rkey = json.dumps(st.resource, sort_keys=True)
            g = groups.setdefault(
                rkey,
                {
                    "resource": {"attributes": _tempo_attrs(st.resource.get("attributes", []))},
                    "scopeSpans": {},
                },
            )
            skey = json.dumps(st.scope, sort_keys=True)
            ss = g["scopeSpans"].setdefault(skey, {"scope": dict(st.scope), "spans": []})
            ss["spans"].append(to_tempo_span(st.span))
        return [
            {"resource": g["resource"], "scopeSpans": list(g["scopeSpans"].values())}
            for g in groups.values()
        ]

    async def _trace_v2(self, request: web.Request) -> web.Response:
        tid = self._check_id(request.match_info["trace_id"])
        if isinstance(tid, web.Response):
            return tid
        rs = self.resource_spans(tid)
        body: dict[str, Any] = {"trace": {"resourceSpans": rs} if rs else {}, "metrics": {}}
        return answer(body)

    async def _trace_v1(self, request: web.Request) -> web.Response:
        tid = self._check_id(request.match_info["trace_id"])
        if isinstance(tid, web.Response):
            return tid
        rs = self.resource_spans(tid)
        if not rs:
            return web.Response(status=404)
        return answer({"batches": rs})

    # --- search ---------------------------------------------------------------------------

    @staticmethod
    def _parse(q: str) -> list[tuple[str, str, str]]:
        q = q.strip()
        if not (q.startswith("{") and q.endswith("}")):
            raise ValueError(f"parse error: unexpected {q[:1]!r}")
        inner = q[1:-1].strip()
        conds = []
        for part in inner.split("&&") if inner else []:
            m = _COND.match(part)
            if not m:
                raise ValueError(f"parse error: unsupported condition {part.strip()!r}")
            conds.append((m.group(1), m.group(2), m.group(3).strip('"')))
        return conds

    @staticmethod
    def _dur_ns(v: str) -> float:
        m = re.fullmatch(r"([\d.]+)(ns|us|ms|s|m)", v)
        if not m:
            raise ValueError(f"bad duration {v}")
        return float(m.group(1)) * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 6e10}[m.group(2)]

    def _span_matches(self, st: _Stored, conds: list[tuple[str, str, str]]) -> bool:
        for field_, op, val in conds:
            if field_ == "resource.service.name":
                ok = (st.service == val) if op == "=" else (st.service != val)
            elif field_ == "status":
                actual = "error" if st.error else "unset"
                ok = (actual == val) if op == "=" else (actual != val)
            else:
                d = int(st.span["endTimeUnixNano"]) - int(st.span["startTimeUnixNano"])
                t = self._dur_ns(val)
                ok = {
                    ">": d > t,
                    ">=": d >= t,
                    "<": d < t,
                    "<=": d <= t,
                    "=": d == t,
                    "!=": d != t,
                }[op]
            if not ok:
                return False
        return True

    async def _search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "{}")
        try:
            conds = self._parse(q)
            start = int(request.query.get("start", "0"))
            end = int(request.query.get("end", str(2**62)))
            limit = int(request.query.get("limit", "20"))
        except ValueError as exc:
            return answer(str(exc) + "\n", 400, "text/plain; charset=utf-8")
        hits = []
        for tid, spans in self.traces.items():
            if not self.visible(tid):
                continue
            matched = [st for st in spans if self._span_matches(st, conds)]
            if not matched:
                continue
            t0 = min(int(st.span["startTimeUnixNano"]) for st in spans)
            t1 = max(int(st.span["endTimeUnixNano"]) for st in spans)
            if not (start * 10**9 <= t0 <= end * 10**9 + 10**9):
                continue
            root = next((st for st in spans if not st.span.get("parentSpanId")), None)
            attrs_wanted = {c[0] for c in conds}
            spanset = {
                "spans": [
                    {
                        "spanID": st.span["spanId"].lower().zfill(16),
                        "startTimeUnixNano": str(int(st.span["startTimeUnixNano"])),
                        "durationNanos": str(
                            int(st.span["endTimeUnixNano"]) - int(st.span["startTimeUnixNano"])
                        ),
                        "attributes": (
                            (
                                [{"key": "service.name", "value": {"stringValue": st.service}}]
                                if "resource.service.name" in attrs_wanted
                                else []
                            )
                            + (
                                [
                                    {
                                        "key": "status",
                                        "value": {"stringValue": "error" if st.error else "unset"},
                                    }
                                ]
                                if "status" in attrs_wanted
                                else []
                            )
                        ),
                    }
                    for st in matched[:3]
                ],
                "matched": len(matched),
            }
            stats: dict[str, dict[str, int]] = {}
            for st in spans:
                s = stats.setdefault(st.service, {"spanCount": 0})
                s["spanCount"] += 1
                if st.error:
                    s["errorCount"] = s.get("errorCount", 0) + 1
            hits.append(
                {
                    "traceID": tid.lstrip("0") or "0",
                    "rootServiceName": root.service if root else "<root span not yet received>",
                    "rootTraceName": root.span.get("name", "") if root else "",
                    "startTimeUnixNano": str(t0),
                    "durationMs": (t1 - t0) // 10**6,
                    "spanSet": spanset,
                    "spanSets": [spanset],
                    "serviceStats": stats,
                }
            )
        hits.sort(key=lambda h: -int(h["startTimeUnixNano"]))
        body = {
            "traces": hits[:limit],
            "metrics": {
                "inspectedBytes": str(sum(len(v) for v in self.traces.values()) * 200),
                "completedJobs": 1,
                "totalJobs": 1,
            },
        }
        return answer(body)

    async def _echo(self, request: web.Request) -> web.Response:
        return web.Response(text="echo\n", content_type="text/plain")

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n", content_type="text/plain")


def otlp_from_tempo(doc: dict[str, Any]) -> dict[str, Any]:
    """Recorded Tempo JSON back into OTLP/JSON ingest form (hex ids, integer enums)."""
    kinds = {v: k for k, v in KIND_NAMES.items()}
    codes = {v: k for k, v in STATUS_NAMES.items()}

    def h(b: str) -> str:
        return base64.b64decode(b).hex()

    out = []
    for rs in doc["trace"]["resourceSpans"] if "trace" in doc else doc["batches"]:
        scopes = []
        for ss in rs["scopeSpans"]:
            spans = []
            for sp in ss["spans"]:
                s = dict(
                    sp, traceId=h(sp["traceId"]), spanId=h(sp["spanId"]), kind=kinds[sp["kind"]]
                )
                if "parentSpanId" in sp:
                    s["parentSpanId"] = h(sp["parentSpanId"])
                st = dict(sp.get("status") or {})
                if "code" in st:
                    st["code"] = codes[st["code"]]
                s["status"] = st
                spans.append(s)
            scopes.append({"scope": ss["scope"], "spans": spans})
        out.append({"resource": rs["resource"], "scopeSpans": scopes})
    return {"resourceSpans": out}


def _proto_value(v: Any) -> dict[str, Any]:
    """An OTLP protobuf AnyValue in OTLP/JSON form."""
    kind = v.WhichOneof("value")  # the protobuf field name: string_value, int_value, ...
    if kind is None:
        return {}
    if kind == "array_value":
        return {"arrayValue": {"values": [_proto_value(x) for x in v.array_value.values]}}
    if kind == "kvlist_value":
        return {"kvlistValue": {"values": _proto_attrs(v.kvlist_value.values)}}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode()}
    if kind == "int_value":
        return {"intValue": str(v.int_value)}
    head, _, tail = kind.partition("_")
    return {head + tail.capitalize(): getattr(v, kind)}


def _proto_attrs(kvs: Any) -> list[dict[str, Any]]:
    return [{"key": kv.key, "value": _proto_value(kv.value)} for kv in kvs]


def otlp_json_from_protobuf(body: bytes) -> dict[str, Any]:
    """A protobuf ExportTraceServiceRequest in the OTLP/JSON form `TempoDouble.ingest` takes
    (hex ids, integer enums, int64 as strings)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    msg = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in msg.resource_spans:
        scopes = []
        for ss in rs.scope_spans:
            spans = []
            for sp in ss.spans:
                s: dict[str, Any] = {
                    "traceId": sp.trace_id.hex(),
                    "spanId": sp.span_id.hex(),
                    "name": sp.name,
                    "kind": int(sp.kind),
                    "startTimeUnixNano": str(sp.start_time_unix_nano),
                    "endTimeUnixNano": str(sp.end_time_unix_nano),
                    "attributes": _proto_attrs(sp.attributes),
                    "events": [
                        {
                            "timeUnixNano": str(e.time_unix_nano),
                            "name": e.name,
                            "attributes": _proto_attrs(e.attributes),
                        }
                        for e in sp.events
                    ],
                    "status": {
                        k: v
                        for k, v in (("code", int(sp.status.code)), ("message", sp.status.message))
                        if v
                    },
                }
                if sp.parent_span_id:
                    s["parentSpanId"] = sp.parent_span_id.hex()
                if sp.flags:
                    s["flags"] = sp.flags
                spans.append(s)
            scope: dict[str, Any] = {"name": ss.scope.name}
            if ss.scope.version:
                scope["version"] = ss.scope.version
            scopes.append({"scope": scope, "spans": spans})
        out.append(
            {"resource": {"attributes": _proto_attrs(rs.resource.attributes)}, "scopeSpans": scopes}
        )
    return {"resourceSpans": out}
