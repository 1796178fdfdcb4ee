"""Loki: the log lines of the chosen traces, and the alerting service's error lines.

Why two kinds of query: the trace's own lines (found by structured metadata `trace_id`, or by
the id appearing in the line; both by default, since services differ in how they log) are
the most specific evidence there is, across every service the trace touched. The service's
error lines in the firing window catch what the trace does not show, but they are many and
repetitive, so they are de-duplicated and collapsed into templates with counts, and capped.

Every line keeps its nanosecond timestamp and provenance (stream labels, span id, the query
that found it), so the bundle can cite it.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from enricher.sources.config import LokiSourceConfig
from enricher.sources.http import BackendError, HttpBackend, HttpResponse
from enricher.sources.prometheus import normalize_trace_id

_MAX_LINE = 2000
_MASKS = [
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:ms|us|ns|s)?\b"), "<n>"),
]
_SPAN_KEYS = ("span_id", "spanid", "spanID", "span")
_TRACE_KEYS = ("trace_id", "traceid", "traceID", "trace")


class LogLine(BaseModel):
    ts_ns: int
    line: str
    labels: dict[str, str] = Field(default_factory=dict)
    service: str = ""
    trace_id: str | None = None
    span_id: str | None = None
    query: str = ""


class LogTemplate(BaseModel):
    """Lines that differ only in ids and numbers, counted once."""

    template: str
    count: int
    example: str
    service: str
    first_ns: int
    last_ns: int
    trace_ids: list[str] = Field(default_factory=list)
    span_ids: list[str] = Field(default_factory=list)


class LogQueryResult(BaseModel):
    query: str
    lines: list[LogLine] = Field(default_factory=list)
    hit_limit: bool = False


class ProcessedLogs(BaseModel):
    """Sorted, de-duplicated, capped lines plus templates over everything that came in."""

    lines: list[LogLine] = Field(default_factory=list)
    templates: list[LogTemplate] = Field(default_factory=list)
    lines_in: int = 0
    duplicates: int = 0
    dropped: int = 0
    queries: list[str] = Field(default_factory=list)


@functools.lru_cache(maxsize=8192)
def mask(line: str) -> str:
    """The line's template. Memoised: error lines repeat (that is why they are templated);
    bounded so that even 2,000-character lines hold at most a few tens of MB."""
    for rx, repl in _MASKS:
        line = rx.sub(repl, line)
    return line


def _cut(line: str) -> str:
    if len(line) <= _MAX_LINE:
        return line
    return line[:_MAX_LINE] + f"…[truncated {len(line) - _MAX_LINE} chars]"


def _first(labels: dict[str, str], keys: Iterable[str]) -> str | None:
    for k in keys:
        if labels.get(k):
            return labels[k]
    return None


def parse_streams(resp: HttpResponse, query: str, service_label: str) -> LogQueryResult:
    """A `streams` answer (structured metadata merged into stream labels, or categorized as a
    third element) into LogLines."""
    doc = resp.parse_json("loki", "query_range")
    data = (doc or {}).get("data") or {}
    if doc.get("status") != "success":
        raise BackendError("loki", "query_range", "bad_response", f"status {doc.get('status')}")
    if data.get("resultType") != "streams":
        raise BackendError(
            "loki", "query_range", "bad_response", f"expected streams, got {data.get('resultType')}"
        )
    out = LogQueryResult(query=query)
    for s in data.get("result") or []:
        base = {str(k): str(v) for k, v in (s.get("stream") or {}).items()}
        for v in s.get("values") or []:
            if not isinstance(v, list) or len(v) < 2:
                continue
            labels = base
            if len(v) > 2 and isinstance(v[2], dict):
                labels = dict(base)
                for part in ("structuredMetadata", "parsed"):
                    labels.update({str(a): str(b) for a, b in (v[2].get(part) or {}).items()})
            try:
                ts = int(v[0])
            except (TypeError, ValueError):
                continue
            tid = _first(labels, _TRACE_KEYS)
            out.lines.append(
                LogLine(
                    ts_ns=ts,
                    line=_cut(str(v[1])),
                    labels=labels,
                    service=labels.get(service_label) or labels.get("service_name") or "",
                    trace_id=normalize_trace_id(tid) if tid else None,
                    span_id=_first(labels, _SPAN_KEYS),
                    query=query,
                )
            )
    return out


def process(lines: Iterable[LogLine], max_lines: int) -> ProcessedLogs:
    """Sort by time, drop exact duplicates (same time and text, e.g. from the two trace-id
    strategies), template everything, keep at most `max_lines` raw lines (newest kept)."""
    seen: set[tuple[int, str]] = set()
    uniq: list[LogLine] = []
    total = 0
    for ln in lines:
        total += 1
        key = (ln.ts_ns, ln.line)
        if key in seen:
            continue
        seen.add(key)
        uniq.append(ln)
    uniq.sort(key=lambda ln: ln.ts_ns)
    # Plain lists while counting (no model attribute assignment per line), models at the end.
    # [template, count, example, service, first_ns, last_ns, trace_ids, span_ids]
    groups: dict[tuple[str, str], list[Any]] = {}
    for ln in uniq:
        t = mask(ln.line)
        g = groups.get((ln.service, t))
        if g is None:
            groups[(ln.service, t)] = g = [t, 0, ln.line, ln.service, ln.ts_ns, ln.ts_ns, [], []]
        g[1] += 1
        g[5] = ln.ts_ns
        tid, sid = ln.trace_id, ln.span_id
        if tid and len(g[6]) < 5 and tid not in g[6]:
            g[6].append(tid)
        if sid and len(g[7]) < 5 and sid not in g[7]:
            g[7].append(sid)
    templates = [
        LogTemplate(
            template=t,
            count=n,
            example=ex,
            service=svc,
            first_ns=first,
            last_ns=last,
            trace_ids=tids,
            span_ids=sids,
        )
        for t, n, ex, svc, first, last, tids, sids in groups.values()
    ]
    kept = uniq[-max_lines:] if len(uniq) > max_lines else uniq
    return ProcessedLogs(
        lines=kept,
        templates=sorted(templates, key=lambda g: (-g.count, g.first_ns)),
        lines_in=total,
        duplicates=total - len(uniq),
        dropped=len(uniq) - len(kept),
    )


def _logql_string(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LokiClient:
    """GET /loki/api/v1/query_range for trace lines and service error lines."""

    def __init__(self, http: HttpBackend, config: LokiSourceConfig) -> None:
        self.http = http
        self.config = config

    @property
    def configured(self) -> bool:
        return self.http.configured

    def trace_queries(self, trace_id: str) -> list[str]:
        sel = self.config.selector
        q = []
        if self.config.trace_id_strategy in ("structured_metadata", "both"):
            q.append(f"{sel} | trace_id={_logql_string(trace_id)}")
        if self.config.trace_id_strategy in ("line_filter", "both"):
            q.append(f"{sel} |= {_logql_string(trace_id)}")
        return q

    def service_errors_query(self, service: str) -> str:
        sel = f"{{{self.config.service_label}={_logql_string(service)}}}"
        return f"{sel} {self.config.error_filter}".strip()

    async def query_range(
        self,
        query: str,
        start_ns: int,
        end_ns: int,
        limit: int,
        deadline: float | None = None,
        direction: Literal["backward", "forward"] = "backward",
    ) -> LogQueryResult:
        resp = await self.http.get(
            "query_range",
            "/loki/api/v1/query_range",
            {
                "query": query,
                "start": str(start_ns),
                "end": str(end_ns),
                "limit": limit,
                "direction": direction,
            },
            deadline=deadline,
        )
        resp.raise_for_status("loki", "query_range")

        def parse() -> LogQueryResult:
            res = parse_streams(resp, query, self.config.service_label)
            res.hit_limit = len(res.lines) >= limit
            return res

        return self.http.parsed(resp, "streams", parse)

    async def trace_logs(
        self, trace_id: str, start_ns: int, end_ns: int, deadline: float | None = None
    ) -> tuple[list[LogQueryResult], list[BackendError]]:
        """Every strategy's query concurrently. Failures are returned beside the answers (one
        strategy failing must not hide the other's lines); if all fail, the first is raised."""
        queries = self.trace_queries(trace_id)
        results = await asyncio.gather(
            *(
                self.query_range(q, start_ns, end_ns, self.config.trace_limit, deadline)
                for q in queries
            ),
            return_exceptions=True,
        )
        ok = [r for r in results if isinstance(r, LogQueryResult)]
        errors = [r for r in results if isinstance(r, BackendError)]
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, BackendError):
                raise r
        if not ok:
            raise errors[0]
        return ok, errors

    async def service_errors(
        self, service: str, start_ns: int, end_ns: int, deadline: float | None = None
    ) -> LogQueryResult:
        return await self.query_range(
            self.service_errors_query(service), start_ns, end_ns, self.config.error_limit, deadline
        )
