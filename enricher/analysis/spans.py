"""Which span explains the alert: span tree, self time, critical path, contrast, culprit.

Why contrast: a trace of a failing request always contains errors and slow spans; many of
them are there in every request (a flaky widget, a slow but harmless call). An operation is
only a suspect if it behaves differently in failing/slow traces than in healthy ones, so
each candidate is counted in both sets ("error in 3/3 failing traces, 0/3 healthy") and an
operation equally common in healthy traces is labelled background and not blamed.

Culprit in one trace: the deepest error span that is not background (errors propagate
upwards, so the deepest is nearest the origin); without one, the span with the largest self
time on the critical path, measured against the same operation's self time in fast traces.

Everything is iterative (no recursion) and O(n log n) in spans, so a span with 10,000
children or a 50,000-span trace is fine.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from enricher.sources.tempo import AttrValue, Span, SpanEvent, Trace

RESOURCE_KEYS = {
    "service.name": ("service.name",),
    "service.version": ("service.version",),
    "service.namespace": ("service.namespace",),
    "vcs.ref.head.revision": ("vcs.ref.head.revision", "vcs.repository.ref.revision"),
    "deployment.environment.name": ("deployment.environment.name", "deployment.environment"),
    "k8s.pod.name": ("k8s.pod.name",),
    "host.name": ("host.name",),
}
_KEEP_PREFIXES = (
    "db.",
    "http.",
    "url.",
    "rpc.",
    "messaging.",
    "feature_flag.",
    "error.",
    "server.",
    "peer.",
    "net.",
    "code.",
    "exception.",
)
_MAX_ATTRS = 30
_MAX_STACK = 1500


class ExceptionInfo(BaseModel):
    type: str = ""
    message: str = ""
    stacktrace: str = ""


class SpanFacts(BaseModel):
    """One span reduced to what a person reads on a page."""

    trace_id: str
    span_id: str
    name: str
    service: str
    kind: str
    depth: int
    start_ns: int
    duration_ms: float
    self_ms: float
    status: Literal["unset", "ok", "error"]
    status_message: str = ""
    on_critical_path: bool = False
    attributes: dict[str, AttrValue] = Field(default_factory=dict)
    feature_flags: dict[str, AttrValue] = Field(default_factory=dict)
    exceptions: list[ExceptionInfo] = Field(default_factory=list)
    resource: dict[str, AttrValue] = Field(default_factory=dict)

    @property
    def op(self) -> str:
        return op_key(self.service, self.name)


class OpContrast(BaseModel):
    """How one operation behaves in failing/slow traces versus healthy ones."""

    op: str
    failing_errors: int = 0
    failing_total: int = 0
    healthy_errors: int = 0
    healthy_total: int = 0
    slow_self_ms: float | None = None
    healthy_self_ms: float | None = None
    background: bool = False
    text: str = ""


class TraceAnalysis(BaseModel):
    trace_id: str
    role: Literal["suspect", "healthy"]
    root: str = ""
    duration_ms: float = 0.0
    span_count: int = 0
    error_ops: list[str] = Field(default_factory=list)
    # Largest self time per operation in this trace (ms), for the latency contrast: one slow
    # call among four parallel ones is the slowdown, and a median would hide it.
    op_self_ms: dict[str, float] = Field(default_factory=dict)
    critical_path: list[SpanFacts] = Field(default_factory=list)
    error_spans: list[SpanFacts] = Field(default_factory=list)
    culprit: SpanFacts | None = None
    culprit_reason: str = ""
    resources: dict[str, dict[str, AttrValue]] = Field(default_factory=dict)
    partial: bool = False
    # span id -> operation, to place log lines (which carry span ids) against operations.
    span_ops: dict[str, str] = Field(default_factory=dict)
    # Operations with an error span none of whose children erred: where errors start, as
    # opposed to the ancestors they propagate to.
    origin_error_ops: list[str] = Field(default_factory=list)
    # Feature flags seen anywhere in the trace ("feature_flag.x=true"), and the services that
    # carried each.
    flags: dict[str, list[str]] = Field(default_factory=dict)
    # operation -> its parent's operation (first seen), for the failing path.
    parent_ops: dict[str, str] = Field(default_factory=dict)
    root_error: bool = False


class Culprit(BaseModel):
    span: SpanFacts
    trace_id: str
    reason: str
    contrast: OpContrast | None = None
    # In how many of the suspect traces this operation was the culprit.
    agreeing_traces: int = 1
    suspect_traces: int = 1
    # How it stands out against healthy traces ("error", "latency", "absent"); empty when
    # nothing does, and then `confidence` is "low".
    stands_out: list[str] = Field(default_factory=list)
    confidence: Literal["high", "medium", "low"] = "medium"


class AttrContrast(BaseModel):
    """How often one attribute value (a feature flag, a service's version) appears in failing
    traces versus healthy ones. `failing_only` is the strong case: common in failing traces
    and rare or absent in healthy ones."""

    key: str
    value: str
    service: str | None = None
    services: list[str] = Field(default_factory=list)
    failing: int = 0
    failing_total: int = 0
    healthy: int = 0
    healthy_total: int = 0
    failing_only: bool = False
    text: str = ""


class TraceFindings(BaseModel):
    suspects: list[TraceAnalysis] = Field(default_factory=list)
    healthy: list[TraceAnalysis] = Field(default_factory=list)
    # The top suspect; `culprits` holds every independent suspect, top first.
    culprit: Culprit | None = None
    culprits: list[Culprit] = Field(default_factory=list)
    contrasts: list[OpContrast] = Field(default_factory=list)
    flags: list[AttrContrast] = Field(default_factory=list)
    versions: list[AttrContrast] = Field(default_factory=list)
    # Why nothing stands out, when nothing does.
    unknown_reason: str = ""


def op_key(service: str, name: str) -> str:
    return f"{service}:{name}"


# --- one trace ----------------------------------------------------------------------------


class _Tree:
    """Index of one trace: children, depth, self time and the critical path."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = list(spans)
        self.by_id: dict[str, int] = {}
        for i, s in enumerate(self.spans):
            self.by_id.setdefault(s.span_id, i)
        self.children: list[list[int]] = [[] for _ in self.spans]
        self.roots: list[int] = []
        for i, s in enumerate(self.spans):
            p = self.by_id.get(s.parent_id) if s.parent_id else None
            if p is None or p == i:
                self.roots.append(i)
            else:
                self.children[p].append(i)
        self.depth = [0] * len(self.spans)
        seen = [False] * len(self.spans)
        queue = list(self.roots)
        for r in queue:
            seen[r] = True
        head = 0
        while head < len(queue):
            i = queue[head]
            head += 1
            for c in self.children[i]:
                if not seen[c]:  # guards against parent cycles in bad data
                    seen[c] = True
                    self.depth[c] = self.depth[i] + 1
                    queue.append(c)
        for i, ok in enumerate(seen):  # spans on a cycle: treat as roots
            if not ok:
                self.roots.append(i)
        self.self_ns = [self._self_time(i) for i in range(len(self.spans))]
        self.critical = self._critical_path()
        # SpanFacts per span index, shared by the analyses of this trace (read-only).
        self.facts: dict[int, SpanFacts] = {}

    def _self_time(self, i: int) -> int:
        s = self.spans[i]
        ivs = sorted(
            (max(self.spans[c].start_ns, s.start_ns), min(self.spans[c].end_ns, s.end_ns))
            for c in self.children[i]
        )
        covered = 0
        cur_s = cur_e = None
        for a, b in ivs:
            if b <= a:
                continue
            if cur_e is None or a > cur_e:
                if cur_e is not None and cur_s is not None:
                    covered += cur_e - cur_s
                cur_s, cur_e = a, b
            else:
                cur_e = max(cur_e, b)
        if cur_e is not None and cur_s is not None:
            covered += cur_e - cur_s
        return max(0, s.duration_ns - covered)

    def _critical_path(self) -> set[int]:
        """Walk back from each root's end: the child finishing last before the current point
        is on the path; continue from its start. Explicit stack, no recursion."""
        if not self.spans:
            return set()
        root = max(self.roots, key=lambda i: self.spans[i].duration_ns)
        path: set[int] = set()
        stack = [root]
        while stack:
            i = stack.pop()
            if i in path:
                continue
            path.add(i)
            t = self.spans[i].end_ns
            for c in sorted(self.children[i], key=lambda c: -self.spans[c].end_ns):
                cs = self.spans[c]
                if cs.start_ns < t and cs.end_ns > self.spans[i].start_ns:
                    stack.append(c)
                    t = cs.start_ns
        return path


def _is_error(s: Span) -> bool:
    return s.status == "error" or any(e.name == "exception" for e in s.events)


def event_flag(e: SpanEvent) -> tuple[str, AttrValue] | None:
    """A `feature_flag.evaluation` event as (feature_flag.<key>, variant or value), reading
    the current and the older semantic-convention names."""
    key = e.attributes.get("feature_flag.key")
    if not key:
        return None
    val = (
        e.attributes.get("feature_flag.result.variant")
        or e.attributes.get("feature_flag.result.value")
        or e.attributes.get("feature_flag.variant")
    )
    return f"feature_flag.{key}", val


def span_facts(s: Span, depth: int, self_ns: int, critical: bool) -> SpanFacts:
    attrs: dict[str, AttrValue] = {}
    others: dict[str, AttrValue] = {}
    flags: dict[str, AttrValue] = {}
    for k, v in s.attributes.items():
        if k.startswith("feature_flag."):
            flags[k] = v
        if k.startswith(_KEEP_PREFIXES):
            attrs[k] = v
        elif len(others) < 10:
            others[k] = v
    for k, v in others.items():
        if len(attrs) >= _MAX_ATTRS:
            break
        attrs.setdefault(k, v)
    excs: list[ExceptionInfo] = []
    for e in s.events:
        if e.name == "exception" and len(excs) < 3:
            excs.append(
                ExceptionInfo(
                    type=str(e.attributes.get("exception.type") or ""),
                    message=str(e.attributes.get("exception.message") or ""),
                    stacktrace=str(e.attributes.get("exception.stacktrace") or "")[:_MAX_STACK],
                )
            )
        else:
            flag = event_flag(e)
            if flag is not None:
                flags[flag[0]] = flag[1]
    return SpanFacts(
        trace_id=s.trace_id,
        span_id=s.span_id,
        name=s.name,
        service=s.service,
        kind=s.kind,
        depth=depth,
        start_ns=s.start_ns,
        duration_ms=round(s.duration_ns / 1e6, 3),
        self_ms=round(self_ns / 1e6, 3),
        status=s.status,
        status_message=s.status_message,
        on_critical_path=critical,
        attributes=attrs,
        feature_flags=flags,
        exceptions=excs,
        resource=resource_facts(s.resource),
    )


def resource_facts(resource: dict[str, AttrValue]) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for name, keys in RESOURCE_KEYS.items():
        for k in keys:
            if resource.get(k) not in (None, ""):
                out[name] = resource[k]
                break
    return out


def analyse_trace(
    trace: Trace,
    role: Literal["suspect", "healthy"] = "suspect",
    background_ops: Iterable[str] = (),
    latency_excess_ms: dict[str, float] | None = None,
    _tree: _Tree | None = None,
) -> TraceAnalysis:
    """Tree facts for one trace, and its culprit given what is known to be background.
    (`_tree`: the trace's index when the caller already built it.)"""
    tree = _tree if _tree is not None else _Tree(trace.spans)
    spans = tree.spans
    background = set(background_ops)
    if not spans:
        return TraceAnalysis(trace_id=trace.trace_id, role=role)
    root_i = max(tree.roots, key=lambda i: spans[i].duration_ns)
    root = spans[root_i]
    per_op: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(spans):
        per_op[op_key(s.service, s.name)].append(tree.self_ns[i])
    error_idx = [i for i, s in enumerate(spans) if _is_error(s)]
    crit = sorted(tree.critical, key=lambda i: (tree.depth[i], spans[i].start_ns))
    resources: dict[str, dict[str, AttrValue]] = {}
    for s in spans:
        if s.service not in resources:
            resources[s.service] = resource_facts(s.resource)

    def facts(i: int) -> SpanFacts:
        f = tree.facts.get(i)
        if f is None:
            f = tree.facts[i] = span_facts(
                spans[i], tree.depth[i], tree.self_ns[i], i in tree.critical
            )
        return f

    culprit_i: int | None = None
    reason = ""
    candidates = [i for i in error_idx if op_key(spans[i].service, spans[i].name) not in background]
    if candidates:
        culprit_i = max(candidates, key=lambda i: (tree.depth[i], tree.self_ns[i]))
        reason = "deepest error span"
        if len(candidates) < len(error_idx):
            reason += " (errors also seen in healthy traces were set aside as background)"
    else:
        excess = latency_excess_ms or {}
        on_path = [
            i for i in tree.critical if op_key(spans[i].service, spans[i].name) not in background
        ]
        if on_path:

            def score(i: int) -> float:
                k = op_key(spans[i].service, spans[i].name)
                base = tree.self_ns[i] / 1e6
                return excess.get(k, base) if excess else base

            culprit_i = max(on_path, key=score)
            reason = (
                "largest self time above healthy traces on the critical path"
                if excess
                else "largest self time on the critical path"
            )
            if error_idx:
                reason += " (its errors are also common in healthy traces)"
    err_set = set(error_idx)
    origin = {
        op_key(spans[i].service, spans[i].name)
        for i in error_idx
        if not any(c in err_set for c in tree.children[i])
    }
    parent_ops: dict[str, str] = {}
    flags: dict[str, set[str]] = defaultdict(set)
    for i, s in enumerate(spans):
        k = op_key(s.service, s.name)
        for c in tree.children[i]:
            parent_ops.setdefault(op_key(spans[c].service, spans[c].name), k)
        for fk, fv in s.attributes.items():
            if fk.startswith("feature_flag."):
                flags[f"{fk}={_flag_value(fv)}"].add(s.service)
        for e in s.events:
            flag = event_flag(e)
            if flag is not None:
                flags[f"{flag[0]}={_flag_value(flag[1])}"].add(s.service)
    ta = TraceAnalysis(
        trace_id=trace.trace_id,
        role=role,
        root=f"{root.service}: {root.name}",
        duration_ms=round((trace.end_ns - trace.start_ns) / 1e6, 3),
        span_count=len(spans),
        error_ops=sorted({op_key(spans[i].service, spans[i].name) for i in error_idx}),
        op_self_ms={k: round(max(v) / 1e6, 3) for k, v in per_op.items()},
        critical_path=[facts(i) for i in crit[:12]],
        error_spans=[facts(i) for i in sorted(error_idx, key=lambda i: -tree.depth[i])[:5]],
        culprit=facts(culprit_i) if culprit_i is not None else None,
        culprit_reason=reason,
        resources=resources,
        partial=trace.partial,
        span_ops={s.span_id: op_key(s.service, s.name) for s in spans},
        origin_error_ops=sorted(origin),
        root_error=_is_error(root),
        flags={k: sorted(v) for k, v in flags.items()},
        parent_ops=parent_ops,
    )
    return ta


def _flag_value(v: AttrValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --- across traces ------------------------------------------------------------------------


def _contrast(suspects: list[TraceAnalysis], healthy: list[TraceAnalysis]) -> list[OpContrast]:
    ops: set[str] = set()
    for t in suspects + healthy:
        ops.update(t.op_self_ms)
    out = []
    fs, hs = len(suspects), len(healthy)
    for op in sorted(ops):
        fe = sum(op in t.error_ops for t in suspects)
        he = sum(op in t.error_ops for t in healthy)
        slow = [t.op_self_ms[op] for t in suspects if op in t.op_self_ms]
        fast = [t.op_self_ms[op] for t in healthy if op in t.op_self_ms]
        c = OpContrast(
            op=op,
            failing_errors=fe,
            failing_total=fs,
            healthy_errors=he,
            healthy_total=hs,
            slow_self_ms=round(statistics.median(slow), 3) if slow else None,
            healthy_self_ms=round(statistics.median(fast), 3) if fast else None,
        )
        if hs and fe and he / hs >= 0.5 * (fe / max(fs, 1)):
            c.background = True
        parts = []
        if fe or he:
            h = f"{he}/{hs} healthy" if hs else "no healthy traces to compare"
            parts.append(f"error in {fe}/{fs} failing traces, {h}")
        if c.slow_self_ms is not None:
            if c.healthy_self_ms is not None:
                parts.append(
                    f"self time {c.slow_self_ms:g} ms in failing traces vs "
                    f"{c.healthy_self_ms:g} ms in healthy"
                )
            elif hs:
                parts.append(f"self time {c.slow_self_ms:g} ms; absent from healthy traces")
        c.text = "; ".join(parts) + (" - background" if c.background else "")
        out.append(c)
    return out


def analyse_traces(
    suspects: Sequence[Trace],
    healthy: Sequence[Trace] = (),
) -> TraceFindings:
    """Analyse failing/slow traces against healthy ones: every operation that stands out
    (`culprits`, top first) and the top suspect (`culprit`)."""
    # First pass: plain facts, to learn which ops err or are slow in healthy traces too.
    # Each suspect's tree is built once and reused by the second pass.
    trees = {id(t): _Tree(t.spans) for t in suspects if t.spans}
    first_s = [analyse_trace(t, "suspect", _tree=trees[id(t)]) for t in suspects if t.spans]
    # A "healthy" trace whose request failed is no contrast (a span-level search such as
    # `status != error && duration < 500ms` also matches fast spans of failing traces).
    first_h = [
        a for a in (analyse_trace(t, "healthy") for t in healthy if t.spans) if not a.root_error
    ]
    contrasts = _contrast(first_s, first_h)
    background = {c.op for c in contrasts if c.background}
    excess: dict[str, float] = {}
    if first_h:
        for c in contrasts:
            if c.slow_self_ms is not None:
                excess[c.op] = c.slow_self_ms - (c.healthy_self_ms or 0.0)
    final_s = [
        analyse_trace(t, "suspect", background, excess, _tree=trees[id(t)])
        for t in suspects
        if t.spans
    ]
    findings = TraceFindings(
        suspects=final_s,
        healthy=first_h,
        contrasts=contrasts,
        flags=_flag_contrasts(final_s, first_h),
        versions=_version_contrasts(final_s, first_h),
    )
    voted = _voted_culprit(final_s, contrasts)
    if first_h:
        by_trace = {t.trace_id: trees[id(t)] for t in suspects if t.spans}
        standouts = _standouts(final_s, first_h, contrasts, by_trace)
        if standouts:
            findings.culprits = standouts
            findings.culprit = standouts[0]
            return findings
        findings.unknown_reason = (
            f"no operation differs between {len(final_s)} failing and {len(first_h)} healthy "
            "traces: compared errors, self time and presence of every operation"
        )
        if voted is not None:
            voted.confidence = "low"
            voted.reason += "; it does not stand out against the healthy traces"
        findings.culprit = voted
        return findings
    # Nothing to contrast with: an error's origin is still a lead; the largest self time
    # alone is not (every request has one), so that is "unknown" with a weak guess.
    if voted is not None:
        voted.reason += "; no healthy traces to compare with"
        findings.culprit = voted
        if voted.span.status == "error":
            voted.confidence = "medium"
            findings.culprits = [voted]
        else:
            voted.confidence = "low"
            findings.unknown_reason = (
                f"no healthy traces to compare the {len(final_s)} slow traces with, and none "
                "of them has an error; the largest self time alone says nothing"
            )
    return findings


def _voted_culprit(final_s: list[TraceAnalysis], contrasts: list[OpContrast]) -> Culprit | None:
    """The operation most suspect traces name as their own culprit."""
    votes = Counter(t.culprit.op for t in final_s if t.culprit is not None)
    if not votes:
        return None
    by_op = {c.op: c for c in contrasts}
    best_op, n = max(
        votes.items(),
        key=lambda kv: (
            kv[1],
            max(
                (t.culprit.self_ms for t in final_s if t.culprit and t.culprit.op == kv[0]),
                default=0.0,
            ),
        ),
    )
    best = next(t for t in final_s if t.culprit is not None and t.culprit.op == best_op)
    assert best.culprit is not None
    contrast = by_op.get(best_op)
    reason = best.culprit_reason
    if contrast is not None and contrast.text:
        reason += f"; {contrast.text}"
    return Culprit(
        span=best.culprit,
        trace_id=best.trace_id,
        reason=reason,
        contrast=contrast,
        agreeing_traces=n,
        suspect_traces=len(final_s),
    )


# An operation stands out on latency when its self time in a failing trace is at least this
# many times, and this many milliseconds above, its median self time in healthy traces.
LATENCY_RATIO = 2.0
LATENCY_EXCESS_MS = 20.0
# ... and is a suspect at all when it stands out in at least this share of failing traces.
MIN_RECURRENCE = 0.3
MAX_CULPRITS = 5


def _standouts(
    suspects: list[TraceAnalysis],
    healthy: list[TraceAnalysis],
    contrasts: list[OpContrast],
    trees: dict[str, _Tree],
) -> list[Culprit]:
    """Every operation that behaves differently in failing traces, by its own doing.

    Per failing trace, an operation stands out when it is where an error starts (an error
    span with no erring child; its ancestors only pass the error on) and it errs rarely in
    healthy traces; when its self time is well above its healthy self time; or when it does
    not occur in healthy traces at all and costs time or errs. Operations standing out in
    enough failing traces are independent suspects: two regressions at once give two."""
    fs, hs = len(suspects), len(healthy)
    healthy_err = Counter(op for t in healthy for op in set(t.error_ops))
    healthy_ops = {op for t in healthy for op in t.op_self_ms}
    by_op = {c.op: c for c in contrasts}
    hits: dict[str, dict[str, list[TraceAnalysis]]] = defaultdict(lambda: defaultdict(list))
    for t in suspects:
        origin = set(t.origin_error_ops)
        for op, self_ms in t.op_self_ms.items():
            c = by_op.get(op)
            if op in origin and healthy_err[op] / hs < 0.5 * (
                sum(op in x.origin_error_ops for x in suspects) / fs
            ):
                hits[op]["error"].append(t)
            if c is not None and c.healthy_self_ms is not None:
                base = c.healthy_self_ms
                if self_ms >= LATENCY_RATIO * base and self_ms - base >= LATENCY_EXCESS_MS:
                    hits[op]["latency"].append(t)
            elif op not in healthy_ops and (self_ms >= LATENCY_EXCESS_MS or op in origin):
                hits[op]["absent"].append(t)
    ranked: list[tuple[float, str, list[str], list[TraceAnalysis]]] = []
    for op, kinds in hits.items():
        traces = {t.trace_id: t for ts in kinds.values() for t in ts}
        recurrence = len(traces) / fs
        if recurrence < MIN_RECURRENCE and len(traces) < 2:
            continue
        c = by_op.get(op)
        excess = 0.0
        if c is not None and c.slow_self_ms is not None:
            excess = c.slow_self_ms - (c.healthy_self_ms or 0.0)
        score = 2 * recurrence + (1.0 if "error" in kinds else 0.0) + min(1.0, excess / 1000)
        ranked.append((score, op, sorted(kinds), list(traces.values())))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    ranked = _without_explained(ranked, suspects)
    out: list[Culprit] = []
    for _score, op, kinds, traces in ranked[:MAX_CULPRITS]:
        best_t, best_i = _representative(op, traces, trees)
        tree = trees[best_t.trace_id]
        f = tree.facts.get(best_i)
        if f is None:
            f = tree.facts[best_i] = span_facts(
                tree.spans[best_i],
                tree.depth[best_i],
                tree.self_ns[best_i],
                best_i in tree.critical,
            )
        c = by_op.get(op)
        words = {
            "error": "errors start here",
            "latency": "self time well above healthy traces",
            "absent": "absent from healthy traces",
        }
        reason = f"stands out in {len(traces)}/{fs} failing traces: " + ", ".join(
            words[k] for k in kinds
        )
        if c is not None and c.text:
            reason += f"; {c.text}"
        recurrence = len(traces) / fs
        strong = "error" in kinds or (
            c is not None
            and c.healthy_self_ms is not None
            and c.slow_self_ms is not None
            and c.slow_self_ms >= 3 * max(c.healthy_self_ms, 1.0)
        )
        out.append(
            Culprit(
                span=f,
                trace_id=best_t.trace_id,
                reason=reason,
                contrast=c,
                agreeing_traces=len(traces),
                suspect_traces=fs,
                stands_out=kinds,
                confidence="high" if recurrence >= 0.6 and strong else "medium",
            )
        )
    return out


def _without_explained(
    ranked: list[tuple[float, str, list[str], list[TraceAnalysis]]],
    suspects: list[TraceAnalysis],
) -> list[tuple[float, str, list[str], list[TraceAnalysis]]]:
    """Drop an operation whose only distinction is an error when an operation below it on
    the same traces is slow: a caller that gives up (a timeout) fails because of the slow
    call, which is the cause to name."""
    slow = {op for _s, op, kinds, _t in ranked if "latency" in kinds or "absent" in kinds}

    def below(op: str) -> bool:
        for t in suspects:
            for child in slow:
                seen = {child}
                cur = t.parent_ops.get(child)
                while cur is not None and cur not in seen:
                    if cur == op:
                        return True
                    seen.add(cur)
                    cur = t.parent_ops.get(cur)
        return False

    return [r for r in ranked if not (r[2] == ["error"] and below(r[1]))]


def _representative(
    op: str, traces: list[TraceAnalysis], trees: dict[str, _Tree]
) -> tuple[TraceAnalysis, int]:
    """The span of `op` to show: an erring one first, then the largest self time."""
    best: tuple[tuple[bool, int], TraceAnalysis, int] | None = None
    for t in traces:
        tree = trees[t.trace_id]
        for i, s in enumerate(tree.spans):
            if op_key(s.service, s.name) != op:
                continue
            key = (_is_error(s), tree.self_ns[i])
            if best is None or key > best[0]:
                best = (key, t, i)
    assert best is not None
    return best[1], best[2]


def _flag_contrasts(
    suspects: list[TraceAnalysis], healthy: list[TraceAnalysis]
) -> list[AttrContrast]:
    out = []
    fs, hs = len(suspects), len(healthy)
    keys = sorted({k for t in suspects + healthy for k in t.flags})
    for k in keys:
        name, _, value = k.partition("=")
        f = sum(k in t.flags for t in suspects)
        h = sum(k in t.flags for t in healthy)
        services = sorted({s for t in suspects + healthy for s in t.flags.get(k, [])})
        out.append(_attr(name, value, None, services, f, fs, h, hs))
    return out


def _version_contrasts(
    suspects: list[TraceAnalysis], healthy: list[TraceAnalysis]
) -> list[AttrContrast]:
    out = []
    fs, hs = len(suspects), len(healthy)
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for role, traces in (("f", suspects), ("h", healthy)):
        for t in traces:
            for svc, res in t.resources.items():
                v = res.get("service.version")
                if v in (None, ""):
                    continue
                f, h = seen.get((svc, str(v)), (0, 0))
                seen[(svc, str(v))] = (f + 1, h) if role == "f" else (f, h + 1)
    for (svc, v), (f, h) in sorted(seen.items()):
        out.append(_attr("service.version", v, svc, [svc], f, fs, h, hs))
    return out


def _attr(
    key: str,
    value: str,
    service: str | None,
    services: list[str],
    f: int,
    fs: int,
    h: int,
    hs: int,
) -> AttrContrast:
    failing_only = bool(fs and hs and f / fs >= 0.5 and h / hs <= 0.25 * (f / fs))
    where = f"{service} " if service else ""
    text = f"{where}{key}={value} in {f}/{fs} failing traces, " + (
        f"{h}/{hs} healthy" if hs else "no healthy traces to compare"
    )
    return AttrContrast(
        key=key,
        value=value,
        service=service,
        services=services,
        failing=f,
        failing_total=fs,
        healthy=h,
        healthy_total=hs,
        failing_only=failing_only,
        text=text + (" - only in failing traces" if failing_only else ""),
    )
