"""Turn what the gather collected into citable, prioritised, redacted evidence items.

Priorities (lower = kept first under the token budget):
  0  the culprit span
  1  log lines of the culprit span; the deploy statement
  2  other lines of the culprit's trace; the culprit's contrast
  3  other error / critical-path spans of that trace; suspect traces and exemplars
  4  lines of the other suspect traces; deploy signals
  5  service error templates that share a trace with the suspects
  6  other contrasts; healthy traces
  8  service error templates unrelated to any suspect trace, background ops (noise)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, Field

from enricher.analysis.spans import SpanFacts, TraceFindings
from enricher.bundle.budget import apply_budget
from enricher.bundle.model import (
    AlertInfo,
    BudgetInfo,
    CulpritSummary,
    EvidenceBundle,
    EvidenceItem,
    GatherStats,
    Link,
    Missing,
    TraceOverview,
)
from enricher.bundle.redact import redact_deep
from enricher.sources.deploys import DeployContext, DeploySignal
from enricher.sources.loki import LogQueryResult, ProcessedLogs, process
from enricher.sources.prometheus import ChosenTrace
from enricher.sources.promql import AlertQuery
from enricher.sources.tempo import TraceFetch

_KEY_ATTRS = (
    "db.query.text",
    "db.statement",
    "db.rows_affected",
    "db.system",
    "db.system.name",
    "db.operation.name",
    "db.response.status_code",
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "url.full",
    "error.type",
    "rpc.method",
    "server.address",
)


class GatheredEvidence(BaseModel):
    """Everything one gather collected, complete or not; filled in as answers arrive."""

    alert: AlertInfo
    service: str | None = None
    window_start: datetime
    window_end: datetime
    query: AlertQuery | None = None
    exemplar_query: str = ""
    chosen: list[ChosenTrace] = Field(default_factory=list)
    traces: dict[str, TraceFetch] = Field(default_factory=dict)
    findings: TraceFindings | None = None
    trace_logs: dict[str, list[LogQueryResult]] = Field(default_factory=dict)
    service_errors: LogQueryResult | None = None
    deploy_signals: list[DeploySignal] = Field(default_factory=list)
    deploy: DeployContext | None = None
    links: list[Link] = Field(default_factory=list)
    missing: list[Missing] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    stats: GatherStats = Field(default_factory=GatherStats)


def _span_item_id(s: SpanFacts, used: set[str]) -> str:
    base = f"span:{s.service}:{s.name}"
    i, out = 2, base
    while out in used:
        out = f"{base}#{i}"
        i += 1
    used.add(out)
    return out


def _span_summary(s: SpanFacts) -> str:
    bits = [f"{s.service} '{s.name}' {s.duration_ms:g} ms (self {s.self_ms:g} ms)"]
    if s.status == "error":
        bits.append("ERROR" + (f": {s.status_message}" if s.status_message else ""))
    if s.exceptions:
        e = s.exceptions[0]
        bits.append(f"exception {e.type}: {e.message}".strip())
    return "; ".join(bits)[:400]


def safe_link(url: str) -> bool:
    """Alert-provided URLs are shown only if they are plain http(s) links."""
    try:
        u = urlparse(url)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and bool(u.netloc)


def _logs_for(ev: GatheredEvidence, trace_id: str, max_lines: int) -> ProcessedLogs:
    results = ev.trace_logs.get(trace_id) or []
    p = process((ln for r in results for ln in r.lines), max_lines)
    p.queries = [r.query for r in results]
    return p


def build_bundle(ev: GatheredEvidence, token_budget: int, max_lines: int = 300) -> EvidenceBundle:
    """Items with stable ids and priorities, then the budget, then redaction of everything."""
    items: list[EvidenceItem] = []
    used_ids: set[str] = set()
    culprit_summary: CulpritSummary | None = None
    f = ev.findings
    culprit = f.culprit if f is not None else None
    culprit_trace = culprit.trace_id if culprit is not None else None
    suspect_ids = [c.trace_id for c in ev.chosen if c.role == "suspect"]
    chosen_by_id = {c.trace_id: c for c in ev.chosen}
    log_n = 0
    tpl_n = 0
    background = {c.op for c in f.contrasts if c.background} if f is not None else set()
    span_ops: dict[str, str] = {}
    if f is not None:
        for t in f.suspects:
            span_ops.update(t.span_ops)

    def trace_query(tid: str) -> str:
        fetch = ev.traces.get(tid)
        return fetch.query if fetch is not None else f"GET /api/v2/traces/{tid}"

    # --- spans ---------------------------------------------------------------------------
    if culprit is not None:
        s = culprit.span
        cid = _span_item_id(s, used_ids)
        items.append(
            EvidenceItem(
                id=cid,
                kind="span",
                source="tempo",
                query=trace_query(culprit.trace_id),
                priority=0,
                summary=_span_summary(s),
                span=s,
            )
        )
        key = {k: s.attributes[k] for k in _KEY_ATTRS if k in s.attributes}
        key.update(s.feature_flags)
        exc = ""
        if s.exceptions:
            exc = f"{s.exceptions[0].type}: {s.exceptions[0].message}".strip(": ")
        culprit_summary = CulpritSummary(
            item_id=cid,
            trace_id=culprit.trace_id,
            service=s.service,
            operation=s.name,
            duration_ms=s.duration_ms,
            self_ms=s.self_ms,
            status=s.status,
            reason=culprit.reason,
            contrast=culprit.contrast.text if culprit.contrast else "",
            agreeing_traces=culprit.agreeing_traces,
            suspect_traces=culprit.suspect_traces,
            key_attributes=key,
            exception=exc,
        )
        if culprit.contrast is not None:
            items.append(
                EvidenceItem(
                    id=f"contrast:{culprit.contrast.op}",
                    kind="contrast",
                    source="analysis",
                    priority=2,
                    summary=culprit.contrast.text,
                    contrast=culprit.contrast,
                    query="suspect vs healthy traces: "
                    + ", ".join(t.trace_id for t in f.suspects + f.healthy)
                    if f
                    else "",
                )
            )
    if f is not None:
        for t in f.suspects:
            prio = 3 if t.trace_id == culprit_trace else 5
            extra = [*t.error_spans, *t.critical_path]
            seen_spans = {culprit.span.span_id} if culprit is not None else set()
            for s in extra:
                if s.span_id in seen_spans:
                    continue
                seen_spans.add(s.span_id)
                if s.status != "error" and s.depth == 0 and t.trace_id != culprit_trace:
                    continue
                items.append(
                    EvidenceItem(
                        id=_span_item_id(s, used_ids),
                        kind="span",
                        source="tempo",
                        query=trace_query(t.trace_id),
                        priority=8
                        if s.op in background
                        else (prio if s.status == "error" else prio + 1),
                        summary=_span_summary(s),
                        span=s,
                    )
                )
        for t in f.suspects + f.healthy:
            chosen = chosen_by_id.get(t.trace_id)
            items.append(
                EvidenceItem(
                    id=f"trace:{t.trace_id}",
                    kind="trace",
                    source="tempo",
                    query=trace_query(t.trace_id),
                    priority=3 if t.role == "suspect" else 6,
                    summary=f"{t.role} trace {t.root}, {t.duration_ms:g} ms, "
                    f"{t.span_count} spans, errors in {', '.join(t.error_ops) or 'none'}",
                    trace=TraceOverview(
                        trace_id=t.trace_id,
                        role=t.role,
                        root=t.root,
                        duration_ms=t.duration_ms,
                        span_count=t.span_count,
                        error_ops=t.error_ops,
                        partial=t.partial,
                        chosen_because=chosen.reason if chosen else "",
                    ),
                )
            )
        for c in f.contrasts:
            if culprit is not None and culprit.contrast is not None and c.op == culprit.contrast.op:
                continue
            if not c.text:
                continue
            items.append(
                EvidenceItem(
                    id=f"contrast:{c.op}",
                    kind="contrast",
                    source="analysis",
                    priority=8 if c.background else 6,
                    summary=c.text,
                    contrast=c,
                )
            )
    for c in ev.chosen:
        items.append(
            EvidenceItem(
                id=f"exemplar:{c.role}:{c.trace_id}",
                kind="exemplar",
                source="prometheus" if c.source == "exemplar" else "tempo",
                query=ev.exemplar_query,
                priority=3 if c.role == "suspect" else 7,
                summary=f"{c.role} trace {c.trace_id}: {c.reason}",
                exemplar=c,
            )
        )

    # --- logs ----------------------------------------------------------------------------
    culprit_logs: list[str] = []
    trace_tpl_keys: set[str] = set()
    ordered = ([culprit_trace] if culprit_trace else []) + [
        t for t in suspect_ids if t != culprit_trace
    ]
    for t in list(ev.trace_logs):
        if t not in ordered:
            ordered.append(t)

    def noise(span_ids: list[str | None]) -> bool:
        ops = [span_ops.get(sid or "") for sid in span_ids]
        return bool(ops) and all(o in background for o in ops if o) and any(ops)

    # Without a culprit (e.g. Tempo down), the first suspect trace's lines are shown in full.
    primary_trace = culprit_trace or next((t for t in ordered if ev.trace_logs.get(t)), None)
    others: list[LogQueryResult] = []
    for tid in ordered:
        if tid != primary_trace:
            others.extend(ev.trace_logs.get(tid) or [])
            continue
        p = _logs_for(ev, tid, max_lines)
        ev.stats.log_lines_in += p.lines_in
        for tpl in p.templates:
            trace_tpl_keys.add(f"{tpl.service}\x00{tpl.template}")
        span_id = culprit.span.span_id if culprit is not None else None
        # lines of the culprit span first, then the rest of its trace
        for ln in sorted(p.lines, key=lambda ln: (ln.span_id != span_id, ln.ts_ns)):
            log_n += 1
            lid = f"log:{log_n}"
            on_span = span_id is not None and ln.span_id == span_id
            if on_span:
                culprit_logs.append(lid)
            prio = 1 if on_span else 8 if noise([ln.span_id]) else 2
            items.append(
                EvidenceItem(
                    id=lid,
                    kind="log",
                    source="loki",
                    query=ln.query,
                    priority=prio,
                    summary=f"{ln.service or '?'}: {ln.line[:300]}",
                    log=ln,
                )
            )
    if others:
        p = process((ln for r in others for ln in r.lines), max_lines)
        ev.stats.log_lines_in += p.lines_in
        q = " ; ".join(dict.fromkeys(r.query for r in others))
        for tpl in p.templates:
            trace_tpl_keys.add(f"{tpl.service}\x00{tpl.template}")
            tpl_n += 1
            items.append(
                EvidenceItem(
                    id=f"logtpl:{tpl_n}",
                    kind="log_template",
                    source="loki",
                    query=q,
                    priority=8 if noise(list(tpl.span_ids)) else 4,
                    summary=f"{tpl.count}x {tpl.service or '?'}: {tpl.example[:300]}",
                    template=tpl,
                )
            )
    if ev.service_errors is not None:
        p = process(ev.service_errors.lines, max_lines)
        ev.stats.log_lines_in += p.lines_in
        if ev.service_errors.hit_limit:
            ev.notes.append(
                f"service error query hit its limit of {len(ev.service_errors.lines)} lines; "
                "counts are lower bounds"
            )
        for tpl in p.templates:
            tpl_n += 1
            related = bool(set(tpl.trace_ids) & set(suspect_ids)) or (
                f"{tpl.service}\x00{tpl.template}" in trace_tpl_keys
            )
            items.append(
                EvidenceItem(
                    id=f"logtpl:{tpl_n}",
                    kind="log_template",
                    source="loki",
                    query=ev.service_errors.query,
                    priority=5 if related else 8,
                    summary=f"{tpl.count}x {tpl.service or '?'}: {tpl.example[:300]}",
                    template=tpl,
                )
            )
    if culprit_summary is not None:
        culprit_summary.log_item_ids = culprit_logs[:10]

    # --- deploys -------------------------------------------------------------------------
    if ev.deploy is not None:
        for n, sig in enumerate(ev.deploy.signals, 1):
            items.append(
                EvidenceItem(
                    id=f"deploy:{sig.source}:{n}",
                    kind="deploy",
                    source={
                        "trace_resource": "tempo",
                        "build_info": "prometheus",
                        "grafana_annotation": "grafana",
                        "ci_event": "ci",
                    }[sig.source],
                    query=sig.query,
                    priority=1 if n == 1 else 4,
                    summary=f"{sig.source}: {sig.service} {sig.version or ''} "
                    f"{sig.commit or ''} {sig.detail}".strip()[:300],
                    deploy=sig,
                )
            )

    bundle = EvidenceBundle(
        alert=ev.alert,
        query=ev.query,
        culprit=culprit_summary,
        deploy=ev.deploy,
        items=items,
        links=ev.links,
        missing=ev.missing,
        findings=ev.notes,
        budget=BudgetInfo(token_budget=token_budget),
        stats=ev.stats,
    )
    return redact_bundle(apply_budget(bundle, token_budget))


def redact_bundle(bundle: EvidenceBundle) -> EvidenceBundle:
    """Last line of defence: every string of the bundle through the redactor."""
    data: Any = redact_deep(bundle.model_dump(mode="json"))
    return EvidenceBundle.model_validate(data)
