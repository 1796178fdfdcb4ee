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

import functools
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, Field
from pydantic_core import to_json

from enricher.analysis.spans import Culprit, SpanFacts, TraceFindings, op_key
from enricher.bundle.budget import (
    SHELL_SLACK,
    BudgetEntry,
    fit,
    shell_tokens,
    tokens_for_chars,
)
from enricher.bundle.model import (
    SCHEMA_VERSION,
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
from enricher.bundle.redact import redact_deep, redact_text
from enricher.sources.deploys import DeployContext, DeploySignal
from enricher.sources.grafana import Annotation
from enricher.sources.loki import LogQueryResult, ProcessedLogs, process
from enricher.sources.prometheus import ChosenTrace
from enricher.sources.promql import AlertQuery
from enricher.sources.tempo import TraceFetch

M = TypeVar("M", bound=BaseModel)

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
    # Grafana deploy annotations of the window, matched to each service at the end.
    annotations: list[Annotation] = Field(default_factory=list)
    annotations_query: str = ""
    deploy: list[DeployContext] = Field(default_factory=list)
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


@functools.lru_cache(maxsize=4096)
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


class BundleCore:
    """The part of a bundle that depends only on the incident's evidence (findings, chosen
    traces, their logs, service error lines), not on the alert: every item except the
    deploy items, the culprit summary, and what building them adds to stats and notes."""

    __slots__ = ("culprit", "culprits", "entries", "log_lines_in", "no_standout", "note", "refs")

    def __init__(
        self,
        entries: list[BudgetEntry],
        culprit: CulpritSummary | None,
        log_lines_in: int,
        note: str | None,
    ) -> None:
        self.entries = entries
        self.culprit = culprit
        self.log_lines_in = log_lines_in
        self.note = note
        self.refs: tuple[Any, ...] = ()
        self.culprits: list[CulpritSummary] = []
        self.no_standout = ""


class BundleMemo:
    """Shares bundle work between the alerts of one incident (an alert storm).

    Keys are the identities of the parsed evidence objects, which the HTTP cache, request
    coalescing and the analysis memo already share between gathers of one incident; each
    entry keeps its key objects alive so an id cannot be reused while the entry exists.
    The objects behind a key are treated as read-only, as are the items of built bundles
    (bundles of one incident share their evidence item objects)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._cores: OrderedDict[Hashable, BundleCore] = OrderedDict()
        self._deploys: OrderedDict[tuple[int, int], tuple[DeploySignal, BudgetEntry]] = (
            OrderedDict()
        )
        self._parts: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self.core_builds = 0  # for tests: how often the shared part was actually built

    def core(self, ev: GatheredEvidence, max_lines: int) -> BundleCore:
        key = (
            id(ev.findings),
            tuple(id(c) for c in ev.chosen),
            tuple((tid, f.query) for tid, f in ev.traces.items()),
            tuple((tid, tuple(id(r) for r in rs)) for tid, rs in ev.trace_logs.items()),
            id(ev.service_errors),
            ev.exemplar_query,
            max_lines,
        )
        hit = self._cores.get(key)
        if hit is not None:
            self._cores.move_to_end(key)
            return hit
        core = _build_core(ev, max_lines)
        self.core_builds += 1
        core.refs = (
            ev.findings,
            list(ev.chosen),
            [r for rs in ev.trace_logs.values() for r in rs],
            ev.service_errors,
        )
        self._cores[key] = core
        while len(self._cores) > self.size:
            self._cores.popitem(last=False)
        return core

    def redacted(self, key: Hashable, ref: Any, make: Callable[[], M]) -> M:
        """A redacted bundle part shared by many bundles (query, culprit, deploy, links)."""
        hit = self._parts.get(key)
        if hit is not None:
            self._parts.move_to_end(key)
            return hit[1]  # type: ignore[no-any-return]
        value = make()
        self._parts[key] = (ref, value)
        while len(self._parts) > 4 * self.size:
            self._parts.popitem(last=False)
        return value

    def json_len(self, key: Hashable, ref: Any, m: BaseModel) -> int:
        """Length of `m`'s JSON, memoised under `key` (kept alive by `ref`)."""
        return self.redacted(("len", key), ref, lambda: len(m.model_dump_json()))

    def shell_tokens(self, shell: EvidenceBundle) -> int:
        """`shell_tokens(shell)` without serialising again the parts an incident's alerts
        share: a model's JSON is its fields' JSON joined by keys and punctuation, so its
        length is the sum of theirs plus those (equality with `shell_tokens` is tested)."""
        n = 1 + len(_SHELL_FIELDS)  # two braces and the commas between fields
        for name in _SHELL_FIELDS:
            v = getattr(shell, name)
            n += len(name) + 3  # "name":
            if v is None:
                n += 4
            elif name in ("query", "culprit"):
                n += self.json_len(id(v), v, v)
            elif name == "links":
                n += _joined(
                    self.json_len(("link", x.kind, x.title, x.url, x.from_alert), None, x)
                    for x in v
                )
            elif isinstance(v, BaseModel):
                n += len(v.model_dump_json())
            elif isinstance(v, list) and v and isinstance(v[0], BaseModel):
                n += _joined(len(x.model_dump_json()) for x in v)
            else:
                n += len(to_json(v))
        return tokens_for_chars(n) + SHELL_SLACK

    def fit(
        self, entries: list[BudgetEntry], used: int, token_budget: int
    ) -> tuple[list[tuple[BudgetEntry, bool]], BudgetInfo]:
        """`fit`, shared by bundles with the same entries and shell cost. The result (and
        its BudgetInfo) is shared and read-only."""
        key = ("fit", tuple(id(e) for e in entries), used, token_budget)
        return self.redacted(key, entries, lambda: fit(entries, used, token_budget))

    def deploy_entry(self, n: int, sig: DeploySignal) -> BudgetEntry:
        key = (n, id(sig))
        hit = self._deploys.get(key)
        if hit is not None and hit[0] is sig:
            self._deploys.move_to_end(key)
            return hit[1]
        entry = BudgetEntry(_deploy_item(n, sig))
        self._deploys[key] = (sig, entry)
        while len(self._deploys) > 4 * self.size:
            self._deploys.popitem(last=False)
        return entry


_SHELL_FIELDS = tuple(EvidenceBundle.model_fields)


def _joined(lengths: Iterable[int]) -> int:
    """Length of a JSON array of elements of these lengths."""
    total, k = 0, 0
    for n in lengths:
        total += n
        k += 1
    return 2 + total + max(0, k - 1)


def _build_core(ev: GatheredEvidence, max_lines: int) -> BundleCore:
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
    lines_in = 0
    note: str | None = None
    background = {c.op for c in f.contrasts if c.background} if f is not None else set()
    span_ops: dict[str, str] = {}
    if f is not None:
        for t in f.suspects:
            span_ops.update(t.span_ops)

    def trace_query(tid: str) -> str:
        fetch = ev.traces.get(tid)
        return fetch.query if fetch is not None else f"GET /api/v2/traces/{tid}"

    # --- spans ---------------------------------------------------------------------------
    suspects_in_order: list[Culprit] = []
    if culprit is not None:
        suspects_in_order.append(culprit)
    if f is not None:
        suspects_in_order += [c for c in f.culprits if c is not culprit]
    summaries: list[CulpritSummary] = []
    shown_spans: set[str] = set()
    for n, cp in enumerate(suspects_in_order):
        item, summary, contrast_item = _culprit_items(cp, n, used_ids, trace_query, f)
        shown_spans.add(cp.span.span_id)
        items.append(item)
        if contrast_item is not None and contrast_item.id not in used_ids:
            used_ids.add(contrast_item.id)
            items.append(contrast_item)
        summaries.append(summary)
    culprit_summary = summaries[0] if culprit is not None else None
    culprits_out = summaries if f is not None and f.culprits else []
    if f is not None:
        for t in f.suspects:
            prio = 3 if t.trace_id == culprit_trace else 5
            extra = [*t.error_spans, *t.critical_path]
            seen_spans = set(shown_spans)
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
            if not c.text or f"contrast:{c.op}" in used_ids:
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
    if f is not None:
        items.extend(_attribute_items(f))
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
        lines_in += p.lines_in
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
        lines_in += p.lines_in
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
        lines_in += p.lines_in
        if ev.service_errors.hit_limit:
            note = (
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
    for extra in summaries[1:]:
        op = op_key(extra.service, extra.operation)
        extra.log_item_ids = [
            i.id for i in items if i.log is not None and span_ops.get(i.log.span_id or "") == op
        ][:10]

    core = BundleCore([BudgetEntry(i) for i in items], culprit_summary, lines_in, note)
    core.culprits = culprits_out
    core.no_standout = f.unknown_reason if f is not None else ""
    return core


def _culprit_items(
    cp: Culprit,
    n: int,
    used_ids: set[str],
    trace_query: Callable[[str], str],
    f: TraceFindings | None,
) -> tuple[EvidenceItem, CulpritSummary, EvidenceItem | None]:
    """The span item of one suspect (the top one first: priority 0), its summary, and the
    contrast item that shows how it stands out."""
    s = cp.span
    cid = _span_item_id(s, used_ids)
    item = EvidenceItem(
        id=cid,
        kind="span",
        source="tempo",
        query=trace_query(cp.trace_id),
        priority=0 if n == 0 else 1,
        summary=_span_summary(s),
        span=s,
    )
    key = {k: s.attributes[k] for k in _KEY_ATTRS if k in s.attributes}
    key.update(s.feature_flags)
    exc = ""
    if s.exceptions:
        exc = f"{s.exceptions[0].type}: {s.exceptions[0].message}".strip(": ")
    contrast_item: EvidenceItem | None = None
    if cp.contrast is not None:
        contrast_item = EvidenceItem(
            id=f"contrast:{cp.contrast.op}",
            kind="contrast",
            source="analysis",
            priority=2,
            summary=cp.contrast.text,
            contrast=cp.contrast,
            query="suspect vs healthy traces: "
            + ", ".join(t.trace_id for t in f.suspects + f.healthy)
            if f
            else "",
        )
    summary = CulpritSummary(
        item_id=cid,
        trace_id=cp.trace_id,
        service=s.service,
        operation=s.name,
        duration_ms=s.duration_ms,
        self_ms=s.self_ms,
        status=s.status,
        reason=cp.reason,
        contrast=cp.contrast.text if cp.contrast else "",
        agreeing_traces=cp.agreeing_traces,
        suspect_traces=cp.suspect_traces,
        key_attributes=key,
        exception=exc,
        stands_out=list(cp.stands_out),
        confidence=cp.confidence,
        contrast_item_id=contrast_item.id if contrast_item is not None else None,
    )
    return item, summary, contrast_item


def _attribute_items(f: TraceFindings) -> list[EvidenceItem]:
    """Flags and versions worth a look: those seen only on failing traces first, then a
    service running more than one version in the window; a version that every trace runs
    says nothing, and is left out."""
    out = []
    multi = Counter(v.service for v in f.versions)
    for a in [*f.flags, *f.versions]:
        if a.key == "service.version" and not a.failing_only and multi[a.service] < 2:
            continue
        where = f"{a.service}:" if a.service else ""
        out.append(
            EvidenceItem(
                id=f"attr:{where}{a.key}={a.value}"[:200],
                kind="attribute",
                source="analysis",
                query="attribute values of suspect vs healthy traces",
                priority=2 if a.failing_only else 6,
                summary=a.text,
                attribute=a,
            )
        )
    return out


_DEPLOY_SOURCES: dict[str, Any] = {
    "trace_resource": "tempo",
    "build_info": "prometheus",
    "grafana_annotation": "grafana",
    "ci_event": "ci",
}


def _deploy_item(n: int, sig: DeploySignal) -> EvidenceItem:
    return EvidenceItem(
        id=f"deploy:{sig.source}:{n}",
        kind="deploy",
        source=_DEPLOY_SOURCES[sig.source],
        query=sig.query,
        priority=1 if n == 1 else 4,
        summary=f"{sig.source}: {sig.service} {sig.version or ''} "
        f"{sig.commit or ''} {sig.detail}".strip()[:300],
        deploy=sig,
    )


def build_bundle(
    ev: GatheredEvidence,
    token_budget: int,
    max_lines: int = 300,
    memo: BundleMemo | None = None,
) -> EvidenceBundle:
    """Items with stable ids and priorities, then the budget, then redaction of everything.

    With a memo, the incident's items (and their costs, shrunk and redacted forms) are
    built once and shared by every alert of the incident; per alert only the bundle's own
    fields (alert, deploy, links, missing, notes, stats) are serialised and redacted."""
    core = memo.core(ev, max_lines) if memo is not None else _build_core(ev, max_lines)
    ev.stats.log_lines_in += core.log_lines_in
    if core.note is not None:
        ev.notes.append(core.note)
    entries = list(core.entries)
    n = 0
    for ctx in ev.deploy:
        for sig in ctx.signals:
            n += 1
            entries.append(
                memo.deploy_entry(n, sig) if memo is not None else BudgetEntry(_deploy_item(n, sig))
            )
    # Every part is an already validated model of its field's type.
    shell = EvidenceBundle.model_construct(
        schema_version=SCHEMA_VERSION,
        alert=ev.alert,
        query=ev.query,
        culprit=core.culprit,
        culprits=core.culprits,
        no_standout=core.no_standout,
        deploy=ev.deploy,
        items=[],
        links=ev.links,
        missing=ev.missing,
        findings=ev.notes,
        budget=BudgetInfo(token_budget=token_budget),
        stats=ev.stats,
    )
    used = shell_tokens(shell) if memo is None else memo.shell_tokens(shell)
    if memo is not None:
        # Alerts of an incident mostly differ in nothing the budget sees but a label's length.
        kept, info = memo.fit(entries, used, token_budget)
    else:
        kept, info = fit(entries, used, token_budget)
    shell.budget = info
    return _redacted_bundle(shell, [_redacted_item(e, shrunk) for e, shrunk in kept], memo)


def _redact_model(m: M) -> M:
    return type(m).model_validate(redact_deep(m.model_dump(mode="json")))


def _redacted_bundle(
    shell: EvidenceBundle, items: list[EvidenceItem], memo: BundleMemo | None
) -> EvidenceBundle:
    """`redact_bundle` of the shell with `items` put in, part by part.

    Equivalent to redacting and validating the whole dump: no top-level field name of the
    bundle is a secret-looking key (tested), so each part is redacted exactly as inside the
    whole, and validating each part is what validating the whole does field by field. Parts
    shared by the alerts of an incident are redacted once (with a memo)."""

    def shared(m: M | None) -> M | None:
        if m is None:
            return None
        if memo is None:
            return _redact_model(m)
        return memo.redacted(id(m), m, lambda: _redact_model(m))

    def link(x: Link) -> Link:
        if memo is None:
            return _redact_model(x)
        return memo.redacted(
            ("link", x.kind, x.title, x.url, x.from_alert), None, lambda: _redact_model(x)
        )

    culprit = shared(shell.culprit)
    return EvidenceBundle.model_construct(
        schema_version=redact_text(shell.schema_version),
        alert=_redact_model(shell.alert),
        query=shared(shell.query),
        culprit=culprit,
        culprits=[culprit if c is shell.culprit else _redact_model(c) for c in shell.culprits],
        no_standout=redact_text(shell.no_standout),
        deploy=[
            memo.redacted(id(d), d, lambda d=d: _redact_model(d)) if memo else _redact_model(d)
            for d in shell.deploy
        ],
        items=items,
        links=[link(x) for x in shell.links],
        missing=[_redact_model(x) for x in shell.missing],
        findings=[redact_text(x) for x in shell.findings],
        budget=shared(shell.budget),  # shared between alerts when the fit was (memo.fit)
        stats=_redact_model(shell.stats),
    )


def _redacted_item(e: BudgetEntry, shrunk: bool) -> EvidenceItem:
    """The item as it appears in a bundle: through the redactor, computed once per entry."""
    if shrunk:
        if e.small_redacted is None:
            e.small_redacted = EvidenceItem.model_validate(
                redact_deep(e.small.model_dump(mode="json"))
            )
        return e.small_redacted
    if e.redacted is None:
        e.redacted = EvidenceItem.model_validate(redact_deep(e.item.model_dump(mode="json")))
    return e.redacted


def redact_bundle(bundle: EvidenceBundle) -> EvidenceBundle:
    """Last line of defence: every string of the bundle through the redactor."""
    data: Any = redact_deep(bundle.model_dump(mode="json"))
    return EvidenceBundle.model_validate(data)
