"""The trace waterfall of a page, as inline SVG drawn on the server.

Why server-side SVG: the page must render with JavaScript off, offline and under a CSP that
allows no script and no external asset, and a person should see at a glance where the
failing request spent its time. So each span of the culprit's trace that the evidence kept
is one bar (x = start offset, width = duration, indented by depth), the culprit is drawn in
a fill nothing else uses and carries `data-culprit="true"`, errors are red, and every bar
links to its evidence item. The evidence keeps span facts only for the failing traces, so
the healthy side is shown per operation (self time in failing vs healthy traces), plus a
second waterfall when the bundle does hold spans of a healthy trace with the same root.

Bounded: at most `MAX_SPANS` bars; the rest are counted ("N more spans"), so a 50,000-span
trace costs the same as a 60-span one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from enricher.analysis.spans import OpContrast, SpanFacts
from enricher.bundle.model import EvidenceBundle, TraceOverview
from enricher.pages.text import anchor, esc, ms

MAX_SPANS = 60
MAX_CONTRAST_OPS = 12
ROW = 20
BAR_H = 14
LABEL_W = 300
BAR_X = LABEL_W + 8
BAR_W = 520
WIDTH = BAR_X + BAR_W + 72
AXIS_H = 18
INDENT = 10
MAX_INDENT_DEPTH = 8

# Fills are also set by the page's stylesheet; the attributes keep the SVG readable alone.
FILL_OK = "#5b7fc7"
FILL_ERROR = "#d9363e"
FILL_CULPRIT = "#f5a524"
FILL_HEALTHY = "#3f9b5a"


def _pick(spans: Sequence[SpanFacts], culprit_span_id: str | None, limit: int) -> list[SpanFacts]:
    """Which spans get a bar when there are too many: the culprit, errors, the critical path,
    then the longest; drawn in start order so the picture is still a waterfall."""
    if len(spans) <= limit:
        chosen = list(spans)
    else:
        ranked = sorted(
            spans,
            key=lambda s: (
                s.span_id != culprit_span_id,
                s.status != "error",
                not s.on_critical_path,
                -s.duration_ms,
            ),
        )
        chosen = ranked[:limit]
    chosen.sort(key=lambda s: (s.start_ns, s.depth))
    return chosen


def render_waterfall(
    spans: Sequence[SpanFacts],
    *,
    culprit_span_id: str | None = None,
    item_ids: Mapping[str, str] | None = None,
    span_count: int | None = None,
    duration_ms: float | None = None,
    title: str = "failing trace",
    healthy: bool = False,
    max_spans: int = MAX_SPANS,
) -> str:
    """One trace as an SVG waterfall; `item_ids` maps span ids to evidence item ids (links)."""
    if not spans:
        return ""
    drawn = _pick(spans, culprit_span_id, max_spans)
    t0 = min(s.start_ns for s in drawn)
    t_end = max(s.start_ns + int(s.duration_ms * 1e6) for s in drawn)
    total_ms = max((t_end - t0) / 1e6, duration_ms or 0.0, 1e-3)
    scale = BAR_W / total_ms
    more = max(span_count or 0, len(spans)) - len(drawn)
    height = AXIS_H + ROW * len(drawn) + (ROW if more > 0 else 0) + 4
    label = esc(title, 120)
    out = [
        f'<svg class="wf" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="{label}: {len(drawn)} spans" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):  # axis: 0, 25, 50, 75, 100 % of the trace
        x = BAR_X + BAR_W * i / 4
        anchor_pos = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{AXIS_H - 4}" x2="{x:.1f}" y2="{height}"/>'
            f'<text class="tick" x="{x:.1f}" y="11" text-anchor="{anchor_pos}">'
            f"{ms(total_ms * i / 4)}</text>"
        )
    ids = item_ids or {}
    for row, s in enumerate(drawn):
        y = AXIS_H + row * ROW
        is_culprit = culprit_span_id is not None and s.span_id == culprit_span_id
        cls = "bar"
        fill = FILL_HEALTHY if healthy else FILL_OK
        if s.status == "error":
            cls += " err"
            fill = FILL_ERROR
        if is_culprit:
            cls += " culprit"
            fill = FILL_CULPRIT
        x = BAR_X + (s.start_ns - t0) / 1e6 * scale
        w = max(s.duration_ms * scale, 1.5)
        depth = min(max(s.depth, 0), MAX_INDENT_DEPTH)
        name = f"{s.service}: {s.name}"
        text = esc(name, (40 if is_culprit else 44) - depth)
        tip = esc(f"{name} {ms(s.duration_ms)} (self {ms(s.self_ms)}) {s.status}", 300)
        extra = ' data-culprit="true" stroke="#6b3d00" stroke-width="2"' if is_culprit else ""
        rect = (
            f'<rect class="{cls}"{extra} x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
            f'height="{BAR_H}" rx="2" fill="{fill}"><title>{tip}</title></rect>'
        )
        item_id = ids.get(s.span_id)
        if item_id is not None:
            rect = f'<a href="#{anchor(item_id)}">{rect}</a>'
        end = x + w
        if end > BAR_X + BAR_W - 60:  # no room on the right: label inside, right-aligned
            dur = (
                f'<text class="dur in" x="{end - 4:.1f}" y="{y + 13}" text-anchor="end">'
                f"{ms(s.duration_ms)}</text>"
            )
        else:
            dur = f'<text class="dur" x="{end + 4:.1f}" y="{y + 13}">{ms(s.duration_ms)}</text>'
        mark = (
            f'<circle class="errdot" cx="{4 + depth * INDENT}" cy="{y + 9}" r="3.5"/>'
            if s.status == "error"
            else ""
        )
        weight = ' font-weight="bold"' if is_culprit else ""
        out.append(
            f'{mark}<text class="lbl" x="{12 + depth * INDENT}" y="{y + 13}"{weight}>'
            f"{text}</text>{rect}{dur}"
        )
    if more > 0:
        y = AXIS_H + len(drawn) * ROW + 13
        out.append(f'<text class="more" x="12" y="{y}">{more} more spans not drawn</text>')
    out.append("</svg>")
    return "".join(out)


def render_contrast(
    contrasts: Sequence[tuple[str, OpContrast]],
    *,
    culprit_op: str | None = None,
    max_ops: int = MAX_CONTRAST_OPS,
) -> str:
    """Per operation, self time in failing traces against healthy ones, as paired bars.

    `contrasts` holds (evidence item id, contrast); the culprit's operation comes first."""
    rows = [
        (i, c) for i, c in contrasts if c.slow_self_ms is not None or c.healthy_self_ms is not None
    ]
    if not rows:
        return ""
    rows.sort(key=lambda r: (r[1].op != culprit_op, -(r[1].slow_self_ms or 0.0)))
    more = len(rows) - max_ops
    rows = rows[:max_ops]
    top = max(max(c.slow_self_ms or 0.0, c.healthy_self_ms or 0.0) for _, c in rows) or 1.0
    scale = BAR_W / top
    pair = 2 * BAR_H + 10
    height = AXIS_H + pair * len(rows) + (ROW if more > 0 else 0) + 4
    out = [
        f'<svg class="wf contrast" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="self time per operation, failing vs healthy traces" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<text class="tick" x="{BAR_X}" y="11">self time: '
        f'<tspan class="k-fail">■ failing traces</tspan> '
        f'<tspan class="k-ok">■ healthy traces</tspan></text>'
    ]
    for n, (item_id, c) in enumerate(rows):
        y = AXIS_H + n * pair
        is_culprit = c.op == culprit_op
        errs = ""
        if c.failing_total or c.healthy_total:
            errs = (
                f" · errors {c.failing_errors}/{c.failing_total} vs "
                f"{c.healthy_errors}/{c.healthy_total}"
            )
        note = " (background)" if c.background else ""
        weight = ' font-weight="bold"' if is_culprit else ""
        out.append(
            f'<a href="#{anchor(item_id)}"><text class="lbl" x="4" y="{y + 12}"{weight}>'
            f"{esc(c.op, 40 if is_culprit else 44)}</text></a>"
            f'<text class="sub" x="4" y="{y + 26}">{esc(errs.lstrip(" ·") + note, 60)}</text>'
        )
        for k, (value, cls, fill) in enumerate(
            (
                (c.slow_self_ms, "cbar fail", FILL_CULPRIT if is_culprit else FILL_ERROR),
                (c.healthy_self_ms, "cbar ok", FILL_HEALTHY),
            )
        ):
            by = y + k * (BAR_H + 2)
            if value is None:
                out.append(f'<text class="dur" x="{BAR_X}" y="{by + 11}">no data</text>')
                continue
            w = max(value * scale, 1.5)
            out.append(
                f'<rect class="{cls}" x="{BAR_X}" y="{by}" width="{w:.1f}" height="{BAR_H}" '
                f'rx="2" fill="{fill}"/>'
                f'<text class="dur" x="{BAR_X + w + 4:.1f}" y="{by + 11}">{ms(value)}</text>'
            )
    if more > 0:
        y = AXIS_H + len(rows) * pair + 13
        out.append(f'<text class="more" x="4" y="{y}">{more} more operations</text>')
    out.append("</svg>")
    return "".join(out)


def render_trace(bundle: EvidenceBundle) -> str:
    """The culprit's failing trace, a healthy trace of the same root if the evidence has its
    spans, and the per-operation contrast: the "where did the time go" part of a page."""
    spans_by_trace: dict[str, list[SpanFacts]] = {}
    item_ids: dict[str, str] = {}
    overviews: dict[str, TraceOverview] = {}
    contrasts: list[tuple[str, OpContrast]] = []
    for item in bundle.items:
        if item.span is not None:
            spans_by_trace.setdefault(item.span.trace_id, []).append(item.span)
            item_ids.setdefault(item.span.span_id, item.id)
        elif item.trace is not None:
            overviews.setdefault(item.trace.trace_id, item.trace)
        elif item.contrast is not None:
            contrasts.append((item.id, item.contrast))
    c = bundle.culprit
    culprit_span_id: str | None = None
    culprit_op: str | None = None
    trace_id: str | None = None
    if c is not None:
        trace_id = c.trace_id
        culprit_op = f"{c.service}:{c.operation}"
        item = bundle.item(c.item_id)
        if item is not None and item.span is not None:
            culprit_span_id = item.span.span_id
            trace_id = item.span.trace_id
    if trace_id is None or trace_id not in spans_by_trace:
        trace_id = next(
            (t for t, o in overviews.items() if o.role == "suspect" and t in spans_by_trace),
            next(iter(spans_by_trace), None),
        )
    parts: list[str] = []
    failing = overviews.get(trace_id) if trace_id else None
    if trace_id is not None:
        title = f"failing trace {trace_id}"
        if failing is not None:
            title += f" · {failing.root} · {ms(failing.duration_ms)}"
        parts.append(f'<h3 class="wft">{esc(title, 200)}</h3>')
        parts.append(
            render_waterfall(
                spans_by_trace[trace_id],
                culprit_span_id=culprit_span_id,
                item_ids=item_ids,
                span_count=failing.span_count if failing else None,
                duration_ms=failing.duration_ms if failing else None,
                title=title,
            )
        )
    healthy = next(
        (
            o
            for t, o in overviews.items()
            if o.role == "healthy"
            and t in spans_by_trace
            and (failing is None or o.root == failing.root)
        ),
        None,
    )
    if healthy is not None:
        title = f"healthy trace {healthy.trace_id} · {healthy.root} · {ms(healthy.duration_ms)}"
        parts.append(f'<h3 class="wft">{esc(title, 200)}</h3>')
        parts.append(
            render_waterfall(
                spans_by_trace[healthy.trace_id],
                item_ids=item_ids,
                span_count=healthy.span_count,
                duration_ms=healthy.duration_ms,
                title=title,
                healthy=True,
            )
        )
    elif failing is not None:
        other = next((o for o in overviews.values() if o.role == "healthy"), None)
        if other is not None:
            parts.append(
                f'<p class="note">healthy trace {esc(other.trace_id, 64)}: '
                f"{esc(other.root, 200)}, {ms(other.duration_ms)}, {other.span_count} spans; "
                "its spans are not kept in the evidence, so it is compared per operation.</p>"
            )
    contrast = render_contrast(contrasts, culprit_op=culprit_op)
    if contrast:
        parts.append('<h3 class="wft">failing vs healthy, per operation</h3>')
        parts.append(contrast)
    return "".join(parts)
