"""Tempo: a trace by id (v2 JSON, v1 `batches` accepted) and the TraceQL search fallback.

Why these rules: Tempo's trace JSON is protobuf's JSON mapping (base64 ids, int64 as
strings, enum names), not OTLP/JSON; v2 answers a missing trace with 200 and an empty trace
(older versions and v1 with 404). All of that is normalised here into `Trace`/`Span` with hex
ids and integers, so the analysis never sees wire quirks. "Not found" is often only "not yet":
Tempo makes a trace queryable some seconds after its spans arrive, so a trace may be asked
again past the HTTP cache (`refetch`), and a trace found that way then serves every later
lookup instead of the cached empty answer. Attribute values are cut to a
bounded length while parsing: a 1 MB SQL text must not travel any further than this module.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from enricher.sources.config import TempoSourceConfig
from enricher.sources.http import HttpBackend, HttpResponse
from enricher.sources.prometheus import normalize_trace_id

AttrValue = str | int | float | bool | list[Any] | dict[str, Any] | None

_KINDS = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
_STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


class SpanEvent(BaseModel):
    name: str
    time_ns: int = 0
    attributes: dict[str, AttrValue] = Field(default_factory=dict)


class Span(BaseModel):
    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    kind: str = "SPAN_KIND_UNSPECIFIED"
    service: str = "unknown_service"
    start_ns: int
    end_ns: int
    status: Literal["unset", "ok", "error"] = "unset"
    status_message: str = ""
    attributes: dict[str, AttrValue] = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)
    resource: dict[str, AttrValue] = Field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


class Trace(BaseModel):
    trace_id: str
    spans: list[Span] = Field(default_factory=list)
    partial: bool = False
    message: str = ""

    @property
    def start_ns(self) -> int:
        return min((s.start_ns for s in self.spans), default=0)

    @property
    def end_ns(self) -> int:
        return max((s.end_ns for s in self.spans), default=0)


class TraceSummary(BaseModel):
    """One hit of /api/search."""

    trace_id: str
    root_service: str = ""
    root_name: str = ""
    start_ns: int = 0
    duration_ms: float = 0.0
    span_ids: list[str] = Field(default_factory=list)


class TraceFetch(BaseModel):
    """Outcome of one trace lookup: found, not found, or the id was refused."""

    trace_id: str
    outcome: Literal["found", "not_found", "bad_id"]
    trace: Trace | None = None
    detail: str = ""
    query: str = ""


# --- id and value decoding ----------------------------------------------------------------


def b64_to_hex(s: str) -> str:
    return base64.b64decode(s).hex()


def _id_hex(raw: Any, nbytes: int) -> str:
    """IDs arrive base64 (Tempo JSON) or hex (OTLP/JSON, search); return lowercase hex."""
    if not raw or not isinstance(raw, str):
        return ""
    return _str_id_hex(raw, nbytes)


@functools.lru_cache(maxsize=65536)
def _str_id_hex(raw: str, nbytes: int) -> str:
    """Memoised: every span repeats its trace id and most repeat a parent's id."""
    if len(raw) == 2 * nbytes and all(c in "0123456789abcdefABCDEF" for c in raw):
        return raw.lower()
    try:
        return base64.b64decode(raw, validate=True).hex().zfill(2 * nbytes)
    except (binascii.Error, ValueError):
        return raw.lower()


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + f"…[truncated {len(value) - limit} chars]"


def any_value(v: Mapping[str, Any] | None, limit: int = 2000, depth: int = 0) -> AttrValue:
    """Decode an OTLP AnyValue (either JSON mapping), bounding strings and nesting."""
    if not v:
        return None
    if "stringValue" in v:
        return _truncate(str(v["stringValue"]), limit)
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return None
    if depth > 4:
        return "…[nested too deep]"
    if "arrayValue" in v:
        vals = (v["arrayValue"] or {}).get("values") or []
        return [any_value(x, limit, depth + 1) for x in vals[:50]]
    if "kvlistValue" in v:
        kvs = (v["kvlistValue"] or {}).get("values") or []
        return {kv.get("key", ""): any_value(kv.get("value"), limit, depth + 1) for kv in kvs[:50]}
    if "bytesValue" in v:
        return _truncate(str(v["bytesValue"]), limit)
    return None


def attributes(kvs: Iterable[Mapping[str, Any]] | None, limit: int = 2000) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for kv in kvs or []:
        key = kv.get("key")
        if isinstance(key, str):
            out[key[:200]] = any_value(kv.get("value"), limit)
    return out


def _enum(raw: Any, table: Mapping[int, str], default: str) -> str:
    if isinstance(raw, int):
        return table.get(raw, default)
    if isinstance(raw, str) and raw:
        return raw
    return default


def _status(raw: Mapping[str, Any] | None) -> tuple[Literal["unset", "ok", "error"], str]:
    raw = raw or {}
    code = _enum(raw.get("code"), _STATUS, "STATUS_CODE_UNSET")
    st: Literal["unset", "ok", "error"] = (
        "error" if code.endswith("ERROR") else "ok" if code.endswith("_OK") else "unset"
    )
    return st, str(raw.get("message") or "")


def spans_from_resource_spans(
    resource_spans: Iterable[Mapping[str, Any]], limit: int = 2000
) -> list[Span]:
    """Flatten resourceSpans/batches -> scopeSpans/instrumentationLibrarySpans -> spans."""
    out: list[Span] = []
    for rs in resource_spans or []:
        resource = attributes((rs.get("resource") or {}).get("attributes"), limit)
        service = str(resource.get("service.name") or "unknown_service")
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for ss in scopes:
            for sp in ss.get("spans") or []:
                st, msg = _status(sp.get("status"))
                out.append(
                    Span(
                        trace_id=_id_hex(sp.get("traceId"), 16),
                        span_id=_id_hex(sp.get("spanId"), 8),
                        parent_id=_id_hex(sp.get("parentSpanId"), 8) or None,
                        name=str(sp.get("name") or "")[:500],
                        kind=_enum(sp.get("kind"), _KINDS, "SPAN_KIND_UNSPECIFIED"),
                        service=service,
                        start_ns=int(sp.get("startTimeUnixNano") or 0),
                        end_ns=int(sp.get("endTimeUnixNano") or 0),
                        status=st,
                        status_message=_truncate(msg, limit),
                        attributes=attributes(sp.get("attributes"), limit),
                        events=[
                            SpanEvent(
                                name=str(e.get("name") or ""),
                                time_ns=int(e.get("timeUnixNano") or 0),
                                attributes=attributes(e.get("attributes"), limit),
                            )
                            for e in (sp.get("events") or [])[:100]
                        ],
                        resource=resource,
                    )
                )
    return out


def parse_trace(trace_id: str, doc: Mapping[str, Any], limit: int = 2000) -> Trace | None:
    """v2 `{"trace":{"resourceSpans":…}}`, v1 `{"batches":…}` or bare `{"resourceSpans":…}`.
    None when the trace is empty (Tempo v2's "not found")."""
    status = ""
    message = ""
    if "trace" in doc:
        body = doc.get("trace") or {}
        rs = body.get("resourceSpans") or body.get("batches") or []
        status = str(doc.get("status") or "")
        message = str(doc.get("message") or "")
    else:
        rs = doc.get("batches") or doc.get("resourceSpans") or []
    spans = spans_from_resource_spans(rs, limit)
    if not spans:
        return None
    return Trace(trace_id=trace_id, spans=spans, partial=status == "PARTIAL", message=message)


def parse_search(doc: Mapping[str, Any]) -> list[TraceSummary]:
    out = []
    for t in doc.get("traces") or []:
        tid = normalize_trace_id(str(t.get("traceID") or ""))
        if tid is None:
            continue
        sets = t.get("spanSets") or ([t["spanSet"]] if t.get("spanSet") else [])
        span_ids = [
            str(s.get("spanID", "")).zfill(16) for ss in sets for s in ss.get("spans") or []
        ]
        out.append(
            TraceSummary(
                trace_id=tid,
                root_service=str(t.get("rootServiceName") or ""),
                root_name=str(t.get("rootTraceName") or ""),
                start_ns=int(t.get("startTimeUnixNano") or 0),
                duration_ms=float(t.get("durationMs") or 0),
                span_ids=span_ids,
            )
        )
    return out


def _traceql_string(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def traceql_for(
    service: str, mode: Literal["error", "slow", "healthy"], threshold_s: float | None = None
) -> str:
    """The fallback search: the service's failing, slow, or (for contrast) healthy traces."""
    svc = f"resource.service.name = {_traceql_string(service)}"
    ms = max(1, round((threshold_s or 0.5) * 1000))
    if mode == "error":
        return f"{{ {svc} && status = error }}"
    if mode == "slow":
        return f"{{ {svc} && duration > {ms}ms }}"
    return f"{{ {svc} && status != error && duration < {ms}ms }}"


class TempoClient:
    """GET /api/v2/traces/<id> and /api/search against one Tempo (tenant via X-Scope-OrgID)."""

    def __init__(self, http: HttpBackend, config: TempoSourceConfig, value_limit: int = 2000):
        self.http = http
        self.config = config
        self.value_limit = value_limit
        # Traces found by a refetch after an empty answer, by id: (expiry, answer). The HTTP
        # cache still holds the empty answer for its TTL; these supersede it.
        self._refetched: OrderedDict[str, tuple[float, HttpResponse]] = OrderedDict()

    @property
    def configured(self) -> bool:
        return self.http.configured

    def trace_url(self, trace_id: str) -> str:
        return self.http.url_for(f"/api/v2/traces/{trace_id}")

    async def fetch_trace(
        self,
        trace_id: str,
        deadline: float | None = None,
        start: int | None = None,
        end: int | None = None,
        refetch: bool = False,
    ) -> TraceFetch:
        """One trace. 5xx and timeouts are retried with backoff inside the deadline; after
        that BackendError is raised. 404/empty -> not_found; 400 -> bad_id. `refetch` asks
        Tempo again past the HTTP cache (a trace answered empty may have arrived since)."""
        tid = normalize_trace_id(trace_id)
        query = f"GET /api/v2/traces/{trace_id}"
        if tid is None:
            return TraceFetch(
                trace_id=trace_id,
                outcome="bad_id",
                query=query,
                detail="not a hex trace id; not sent",
            )
        params: dict[str, str | int | float] = {}
        if start is not None and end is not None:
            params = {"start": start, "end": end}
        if not refetch and not params:
            hit = self._refetched.get(tid)
            if hit is not None and hit[0] > time.monotonic():
                found = hit[1]
                return self.http.parsed(
                    found, "trace", lambda: self._trace_result(tid, found, query)
                )
        resp = await self.http.get(
            "trace_by_id",
            f"/api/v2/traces/{tid}",
            params or None,
            headers={"Accept": "application/json"},
            deadline=deadline,
            retries=self.config.retries,
            backoff=self.config.backoff,
            cache=not refetch,
        )
        res = self.http.parsed(resp, "trace", lambda: self._trace_result(tid, resp, query))
        if refetch and not params and res.outcome == "found" and self.http.cache_ttl > 0:
            self._refetched[tid] = (time.monotonic() + self.http.cache_ttl, resp)
            self._refetched.move_to_end(tid)
            while len(self._refetched) > 256:
                self._refetched.popitem(last=False)
        return res

    def _trace_result(self, tid: str, resp: HttpResponse, query: str) -> TraceFetch:
        if resp.status == 404:
            return TraceFetch(
                trace_id=tid, outcome="not_found", query=query, detail="Tempo answered 404"
            )
        if resp.status == 400:
            return TraceFetch(trace_id=tid, outcome="bad_id", query=query, detail=resp.text(300))
        resp.raise_for_status("tempo", "trace_by_id")
        doc = resp.parse_json("tempo", "trace_by_id")
        trace = parse_trace(tid, doc, self.value_limit) if isinstance(doc, dict) else None
        if trace is None:
            return TraceFetch(
                trace_id=tid,
                outcome="not_found",
                query=query,
                detail="Tempo answered with an empty trace",
            )
        return TraceFetch(trace_id=tid, outcome="found", trace=trace, query=query)

    async def search(
        self,
        q: str,
        start: int,
        end: int,
        limit: int | None = None,
        deadline: float | None = None,
    ) -> list[TraceSummary]:
        resp = await self.http.get(
            "search",
            "/api/search",
            {"q": q, "start": start, "end": end, "limit": limit or self.config.search_limit},
            deadline=deadline,
            retries=self.config.retries,
            backoff=self.config.backoff,
        )
        resp.raise_for_status("tempo", "search")
        doc = resp.parse_json("tempo", "search")
        return parse_search(doc if isinstance(doc, dict) else {})
