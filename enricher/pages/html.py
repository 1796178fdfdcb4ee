"""The HTML page of an alert (`GET /pages/<id>`) and the index of recent pages (`GET /pages`).

Why server-rendered, one document, no script and no external asset: the page is opened by
someone woken at 3 a.m., possibly on a phone, possibly while the CDN or the VPN is the thing
that is down, and it displays content written by whoever can reach Alertmanager or an
instrumented service. So it renders complete with JavaScript off and offline, and the CSP it
is served with (`HTML_HEADERS`) allows nothing but its own inline stylesheet. Every piece of
alert, trace and log content goes through `text.esc` (bounded, hidden characters dropped,
escaped for text and quoted attributes), and links are shown only if they pass the bundle's
`safe_link`. Evidence ids cited by a hypothesis are in-page anchors to the item itself, so a
reader can check every claim; CSS `:target` highlights the item they jumped to.

Pure functions of a `Page`: rendering the checkout incident costs well under a millisecond.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from enricher.analysis.model import Analysis, Hypothesis
from enricher.bundle.model import EvidenceBundle, EvidenceItem
from enricher.notify.page import MAX_LISTED_ALERTS, NO_SOURCES, Page, page_from_record
from enricher.pages.text import anchor, esc, fmt_value, ms, safe_href, ts, ts_ns
from enricher.pages.waterfall import render_trace
from enricher.store.base import DeliveryRecord, PageRecord

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HTML_HEADERS: dict[str, str] = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Bounds: a page stays a few hundred KB at most whatever the alert or the logs hold.
MAX_HYPOTHESES = 12
MAX_SIGNALS = 8
MAX_CITES = 12
MAX_ITEMS = 120
MAX_LOG_LINES = 12
MAX_TEMPLATES = 8
MAX_LINKS = 20
MAX_LABELS = 40
MAX_ANNOTATIONS = 20
MAX_ALERT_LABELS = 12
MAX_ATTRS = 30
MAX_DEPLOYS = 20
MAX_MISSING = 20
MAX_DELIVERIES = 20
MAX_REASONS = 10
MAX_LOG_CHARS = 2000
_SEVERITIES = {"critical", "error", "warning", "info", "page"}
# Shown in this order; kinds not listed follow.
_LINK_ORDER = {
    "grafana_trace": 0,
    "grafana_logs": 1,
    "runbook": 2,
    "dashboard": 3,
    "tempo_trace": 4,
    "generator": 5,
    "alertmanager": 6,
}

_STYLE = """
:root{--fg:#1c2024;--mut:#60646c;--line:#dfe1e5;--bg:#f7f8fa;--card:#fff;--acc:#2f5bb7;
--crit:#c9252d;--warn:#b35c00;--ok:#2b7a43;--hl:#fff4d6}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:4px 0}h2{font-size:16px;margin:0 0 8px}
h3{font-size:14px;margin:8px 0 4px}
a{color:var(--acc)}code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;
font-size:12.5px}
pre{white-space:pre-wrap;word-break:break-word;margin:0}
section,header{background:var(--card);border:1px solid var(--line);border-radius:6px;
padding:12px 16px;margin:0 0 12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;background:var(--mut);margin-right:6px;text-transform:uppercase}
.sev-critical,.sev-error,.sev-page{background:var(--crit)}.sev-warning{background:var(--warn)}
.sev-info{background:var(--acc)}.st-firing{background:var(--crit)}
.st-resolved{background:var(--ok)}.st-degraded{background:var(--warn)}
.where{color:var(--mut);margin:0}.summary{margin:6px 0}
.resolved{background:#e6f4ea;border:1px solid #b7dfc3;border-radius:4px;padding:6px 10px;
margin:8px 0}
.degraded{background:#fff1e0;border:1px solid #f3c99a;border-radius:4px;padding:6px 10px;
margin:8px 0}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:4px 0}
dl.kv dt{color:var(--mut)}dl.kv dd{margin:0;word-break:break-word}
.cause{border-left:5px solid var(--crit)}.cause.unknown{border-left-color:var(--mut)}
.stmt{font-size:16px;margin:4px 0 8px;word-break:break-word}
.conf{font-weight:700}.src,.kind,.note,.sub{color:var(--mut);font-size:12px}
.evid{display:inline-block;font-family:ui-monospace,"DejaVu Sans Mono",monospace;
font-size:12px;background:#eef2fb;border:1px solid #d3dcf0;border-radius:3px;padding:0 5px;
margin:1px 2px;text-decoration:none;word-break:break-all}
.evid.gone{background:#f2f2f2;color:var(--mut);border-color:var(--line)}
.chip{display:inline-block;background:#f1f3f5;border-radius:3px;padding:0 5px;margin:1px 2px;
font-size:12px;word-break:break-all}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:3px 8px 3px 0;border-bottom:1px solid
var(--line)}th{color:var(--mut);font-weight:600;font-size:12px}
td.c{min-width:6em;max-width:16em}td.s{max-width:12em;word-break:break-word}
td.t{white-space:nowrap;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
ol.hyps>li{margin:0 0 10px}ol.hyps>li.top{font-weight:500}
ul.signals{margin:2px 0;padding-left:18px;font-size:13px}
ol.timeline{list-style:none;padding:0;margin:0}
ol.timeline li{display:grid;grid-template-columns:90px 1fr;gap:10px;padding:4px 0;
border-left:3px solid var(--line);padding-left:10px}
ol.timeline li.suspect{border-left-color:var(--crit);background:#fdf0f0}
ol.timeline li.ruled_out{border-left-color:var(--ok)}
ol.timeline li.alert{border-left-color:var(--fg);font-weight:600}
.when{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;text-align:right}
.tag{font-size:11px;font-weight:700;text-transform:uppercase;padding:0 5px;border-radius:3px;
background:#eee}.tag.suspect{background:var(--crit);color:#fff}
.tag.ruled_out{background:#d9f0df;color:var(--ok)}
.ev{border:1px solid var(--line);border-radius:4px;padding:6px 10px;margin:6px 0;
scroll-margin-top:12px}
.ev:target{outline:3px solid #f5a524;background:var(--hl)}
.ev h3{margin:0 0 2px;font-size:13px;word-break:break-all}.ev p{margin:2px 0}
svg.wf{display:block;max-width:900px;margin:4px 0 8px}
svg.wf text{font-size:12px;fill:var(--fg);font-family:system-ui,"DejaVu Sans",sans-serif}
svg.wf text.tick,svg.wf text.more,svg.wf text.sub{fill:var(--mut);font-size:11px}
svg.wf text.dur{font-size:11px}svg.wf text.dur.in{fill:#fff;font-weight:600}
svg.wf line.grid{stroke:#eceef1}svg.wf .bar{fill:#5b7fc7}svg.wf .bar.err{fill:#d9363e}
svg.wf .bar.culprit{fill:#f5a524;stroke:#6b3d00;stroke-width:2}
svg.wf .errdot{fill:#d9363e}svg.wf .cbar.ok{fill:#3f9b5a}
svg.wf .k-fail{fill:#d9363e}svg.wf .k-ok{fill:#3f9b5a}
.wft{font-size:13px;color:var(--mut);font-weight:600;word-break:break-all}
footer{color:var(--mut);font-size:12px;padding:4px 2px 24px}
nav.pager{margin:8px 0}
"""


_COMMON = '<span class="note">common labels only</span>'
_NONE = '<span class="note">none</span>'


def _doc(title: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body><main>"
        + "".join(body)
        + "</main></body></html>"
    )


def _cite(ids: Iterable[str | None], known: set[str]) -> str:
    """Evidence ids as links to their items; an id the bundle does not hold is shown, unlinked."""
    out = []
    for n, i in enumerate(ids):
        if i is None:
            continue
        if n >= MAX_CITES:
            out.append('<span class="note">…</span>')
            break
        if i in known:
            out.append(f'<a class="evid" href="#{anchor(i)}">{esc(i, 120)}</a>')
        else:
            out.append(f'<span class="evid gone" title="not in the evidence">{esc(i, 120)}</span>')
    return " ".join(out)


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; labels are ours, values already escaped by the caller."""
    if not rows:
        return ""
    return '<dl class="kv">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _chips(pairs: Iterable[tuple[str, Any]], limit: int, value_limit: int = 200) -> str:
    out = []
    for n, (k, v) in enumerate(pairs):
        if n >= limit:
            out.append('<span class="note">…</span>')
            break
        out.append(f'<span class="chip">{esc(k, 120)}={esc(v, value_limit)}</span>')
    return "".join(out)


def _names(page: Page) -> tuple[str, str, str]:
    labels, b = page.labels, page.evidence
    name = labels.get("alertname") or (b.alert.alertname if b is not None else "") or "alert"
    service = labels.get("service") or (b.alert.service if b is not None else None) or ""
    env = labels.get("environment") or labels.get("env") or ""
    return name, service, env


def _resolved_text(page: Page) -> str:
    if page.resolved_at is not None:
        by = ""
        if page.resolved_by is not None:
            by = (
                f' (resolution: <a href="/pages/{int(page.resolved_by)}">'
                f"page {int(page.resolved_by)}</a>)"
            )
        return f"Resolved at <time>{ts(page.resolved_at)}</time>{by}."
    if page.status != "resolved":
        return ""
    ends = [a.ends_at for a in page.alerts if a.ends_at is not None]
    when = max(ends) if ends else page.received_at
    text = f"Resolved at <time>{ts(when)}</time>"
    if page.resolves is not None:
        r = int(page.resolves)
        text += f'; this resolves <a href="/pages/{r}">page {r}</a>'
    return text + "."


def _header(page: Page) -> str:
    name, service, env = _names(page)
    sev = (page.severity or "").lower()
    sev_cls = sev if sev in _SEVERITIES else "other"
    status = "resolved" if page.status == "resolved" or page.resolved_at is not None else "firing"
    badges = [
        f'<span class="badge sev-{sev_cls}">{esc(page.severity or "no severity", 40)}</span>',
        f'<span class="badge st-{status}">{status}</span>',
    ]
    if page.degraded:
        badges.append('<span class="badge st-degraded">degraded</span>')
    where = " · ".join(esc(x, 120) for x in (service, env) if x)
    ann = page.annotations
    summary = ann.get("summary") or ""
    desc = ann.get("description") or ""
    out = [
        '<header class="hd">',
        "".join(badges),
        f'<h1 id="alertname">{esc(name, 200)}</h1>',
        f'<p class="where">{where}</p>' if where else "",
        f'<p class="summary">{esc(summary, 600)}</p>' if summary else "",
        f'<p class="summary sub">{esc(desc, 1200)}</p>' if desc and desc != summary else "",
    ]
    resolved = _resolved_text(page)
    if resolved:
        out.append(f'<p class="resolved" id="resolved">{resolved}</p>')
    rows = [
        ("Received", f"<time>{ts(page.received_at)}</time>"),
        (
            "Paged",
            f"<time>{ts(page.paged_at)}</time> "
            f'<span class="note">{_delta_s(page.received_at, page.paged_at)} after receipt, '
            f"deadline {ts(page.deadline)}</span>",
        ),
    ]
    b = page.evidence
    starts = b.alert.starts_at if b is not None else _first_start(page)
    if starts is not None:
        rows.insert(0, ("Alert started", f"<time>{ts(starts)}</time>"))
    rows.append(("Alerts in group", str(int(page.alert_count))))
    out.append(_kv(rows))
    if page.degraded:
        reasons = "".join(f"<li>{esc(r, 400)}</li>" for r in page.reasons[:MAX_REASONS])
        more = len(page.reasons) - MAX_REASONS
        if more > 0:
            reasons += f"<li>{more} more</li>"
        out.append(
            '<div class="degraded" id="degraded"><b>Degraded page</b>: paged without part of '
            f"its evidence or analysis.<ul>{reasons}</ul></div>"
        )
    out.append("</header>")
    return "".join(out)


def _first_start(page: Page) -> datetime | None:
    starts = [a.starts_at for a in page.alerts]
    return min(starts) if starts else None


def _delta_s(a: datetime, b: datetime) -> str:
    try:
        return f"{(b - a).total_seconds():.1f} s"
    except TypeError:  # naive vs aware, from a hand-made document
        return "?"


def _cause(page: Page, known: set[str]) -> str:
    a = page.analysis
    if a is None or not a.hypotheses:
        if page.status == "resolved" and page.resolved_at is None:
            why = "A resolution is not analysed; the cause is on the firing page."
        elif a is None:
            why = "No root-cause analysis ran for this page."
        else:
            why = esc(a.unknown_reason or a.summary or "The analysis found no hypothesis.", 600)
        return (
            '<section class="cause unknown" id="cause"><h2>Cause</h2>'
            f'<p class="stmt" id="hypothesis">{why}</p></section>'
        )
    top = a.hypotheses[0]
    unknown = top.kind == "unknown"
    label = "Cause unknown" if unknown else "Likely cause"
    actions = "".join(f"<li>{esc(x, 300)}</li>" for x in top.actions[:5])
    cites = _cite(top.evidence_ids, known)
    return (
        f'<section class="cause{" unknown" if unknown else ""}" id="cause">'
        f'<h2>{label} <span class="conf">{top.confidence:.0%}</span> '
        f'<span class="src">{esc(top.source, 20)}</span></h2>'
        f'<p class="stmt" id="hypothesis">{esc(top.statement, 1200)}</p>'
        + (f'<p class="cites">Evidence: {cites}</p>' if cites else "")
        + (f'<ul class="actions">{actions}</ul>' if actions else "")
        + "</section>"
    )


def _facts(page: Page, known: set[str]) -> str:
    b, a = page.evidence, page.analysis
    rows: list[tuple[str, str]] = []
    if b is not None and b.culprit is not None:
        c = b.culprit
        rows.append(
            (
                "Suspect span",
                f"{esc(c.service, 120)} <code>{esc(c.operation, 200)}</code> "
                f"<b>{ms(c.duration_ms)}</b> (self {ms(c.self_ms)}, {esc(c.status, 20)}) "
                + _cite([c.item_id], known),
            )
        )
        if c.exception:
            rows.append(("Exception", f"<code>{esc(c.exception, 400)}</code>"))
        if c.contrast:
            rows.append(
                ("Against healthy", esc(c.contrast, 400) + " " + _cite([c.contrast_item_id], known))
            )
        stands = ", ".join(c.stands_out) or "nothing against healthy traces"
        rows.append(
            (
                "Confidence",
                f"{esc(c.confidence, 10)}: culprit in {int(c.agreeing_traces)}/"
                f"{int(c.suspect_traces)} failing traces, stands out by {esc(stands, 100)}",
            )
        )
        attrs = [(k, v) for k, v in c.key_attributes.items() if not k.startswith("feature_flag.")]
        if attrs:
            rows.append(("Attributes", _chips(attrs, 8, 300)))
    deploy = _deploy_fact(page, known)
    if deploy:
        rows.append(("Deploy", deploy))
    if a is not None:
        ruled = [v for v in a.deploys if v.verdict == "ruled_out"]
        if ruled:
            rows.append(
                (
                    "Ruled out",
                    "; ".join(
                        f"{esc(v.service, 120)} {esc(v.version or '', 60)}: {esc(v.reason, 200)}"
                        for v in ruled[:3]
                    ),
                )
            )
    flags = _flags(b, known)
    if flags:
        rows.append(("Feature flag", flags))
    if b is not None and not rows and b.no_standout:
        rows.append(("Nothing stands out", esc(b.no_standout, 600)))
    if not rows:
        return ""
    return '<section id="facts"><h2>What the evidence says</h2>' + _kv(rows) + "</section>"


def _deploy_fact(page: Page, known: set[str]) -> str:
    """The deploy a person should look at: the analysis' suspect, else the culprit's service's
    own deploy (version -> commit, and how long before the alert)."""
    b, a = page.evidence, page.analysis
    blamed = next((v for v in a.deploys if v.verdict == "suspect"), None) if a else None
    if blamed is not None:
        ver = " -> ".join(esc(x, 80) for x in (blamed.version, blamed.commit) if x)
        text = f"<b>{esc(blamed.service, 120)}</b> {ver}"
        if blamed.minutes_before_alert is not None:
            text += f", deployed <b>{blamed.minutes_before_alert:g} min before</b> the alert"
        ctx = b.deploy_of(blamed.service) if b is not None else None
        if ctx is not None and ctx.previous_version:
            prev = " -> ".join(esc(x, 80) for x in (ctx.previous_version, ctx.previous_commit) if x)
            text += f" (previously {prev})"
        text += f' <span class="sub">{esc(blamed.reason, 400)}</span>'
        ids = list(blamed.evidence_ids) or _deploy_items(b, blamed.service)
        return text + " " + _cite(ids, known)
    if b is None or b.culprit is None:
        return ""
    ctx = b.deploy_of(b.culprit.service)
    if ctx is None or not (ctx.current_version or ctx.current_commit):
        return ""
    ver = " -> ".join(esc(x, 80) for x in (ctx.current_version, ctx.current_commit) if x)
    text = f"{esc(ctx.service, 120)} {ver}"
    if ctx.minutes_before_alert is not None:
        text += f", deployed <b>{ctx.minutes_before_alert:g} min before</b> the alert"
    else:
        text += ", no deploy in the lookback window"
    return text + " " + _cite(_deploy_items(b, ctx.service), known)


def _deploy_items(b: EvidenceBundle | None, service: str) -> list[str]:
    if b is None:
        return []
    return [i.id for i in b.items if i.deploy is not None and i.deploy.service == service]


def _flags(b: EvidenceBundle | None, known: set[str]) -> str:
    if b is None:
        return ""
    parts = []
    seen: set[str] = set()
    for item in b.items:
        at = item.attribute
        if at is None or not at.key.startswith("feature_flag.") or not at.failing_only:
            continue
        key = f"{at.key}={at.value}"
        seen.add(key)
        parts.append(
            f"<code>{esc(key, 200)}</code> only in failing traces "
            f"({int(at.failing)}/{int(at.failing_total)} failing, "
            f"{int(at.healthy)}/{int(at.healthy_total)} healthy) " + _cite([item.id], known)
        )
    if b.culprit is not None:
        for k, v in b.culprit.key_attributes.items():
            key = f"{k}={fmt_value(v)}"
            if k.startswith("feature_flag.") and key not in seen:
                seen.add(key)
                parts.append(f"<code>{esc(key, 200)}</code> on the suspect span")
    return "<br>".join(parts[:4])


def _trace(b: EvidenceBundle | None) -> str:
    if b is None:
        return ""
    body = render_trace(b)
    if not body:
        return ""
    return '<section id="trace"><h2>Trace waterfall</h2>' + body + "</section>"


def _logs(b: EvidenceBundle | None, known: set[str]) -> str:
    if b is None:
        return ""
    lines = [i for i in b.items if i.log is not None]
    templates = [i for i in b.items if i.template is not None]
    if not lines and not templates:
        return ""
    first = set(b.culprit.log_item_ids) if b.culprit is not None else set()
    lines.sort(key=lambda i: (i.id not in first, i.log.ts_ns if i.log else 0))
    out = ['<section id="logs"><h2>Key log lines</h2>']
    if lines:
        out.append("<table><tr><th>time</th><th>service</th><th>line</th><th></th></tr>")
        for item in lines[:MAX_LOG_LINES]:
            ln = item.log
            assert ln is not None
            out.append(
                f'<tr><td class="t">{ts_ns(ln.ts_ns)}</td><td class="s">{esc(ln.service, 80)}</td>'
                f"<td><pre>{esc(ln.line, MAX_LOG_CHARS)}</pre></td>"
                f'<td class="c">{_cite([item.id], known)}</td></tr>'
            )
        out.append("</table>")
        if len(lines) > MAX_LOG_LINES:
            out.append(f'<p class="note">{len(lines) - MAX_LOG_LINES} more lines below.</p>')
    if templates:
        out.append("<h3>Repeated lines</h3><ul>")
        for item in templates[:MAX_TEMPLATES]:
            t = item.template
            assert t is not None
            out.append(
                f"<li>{int(t.count)}&times; {esc(t.service, 80)} "
                f"<code>{esc(t.template, 600)}</code> "
                f'<span class="note">{ts_ns(t.first_ns)} &ndash; {ts_ns(t.last_ns)}</span> '
                f"{_cite([item.id], known)}</li>"
            )
        out.append("</ul>")
    out.append("</section>")
    return "".join(out)


def _hypothesis(n: int, h: Hypothesis, known: set[str]) -> str:
    where = " ".join(
        f"<code>{esc(x, 120)}</code>" for x in (h.service, h.operation) if x is not None
    )
    signals = "".join(
        f"<li><b>{esc(s.name, 40)}</b> +{s.weight:.2f} {esc(s.detail, 300)} "
        f"{_cite(s.evidence_ids, known)}</li>"
        for s in h.signals[:MAX_SIGNALS]
    )
    cites = _cite(h.evidence_ids, known)
    extra = f' <span class="tag">{esc(h.kind, 10)}</span>' if h.kind != "cause" else ""
    if h.confirms:
        extra += f' <span class="note">confirms {esc(h.confirms, 200)}</span>'
    return (
        f'<li class="hyp{" top" if n == 0 else ""}" id="h{n + 1}">'
        f'<p><span class="conf">{h.confidence:.0%}</span> <span class="src">'
        f"{esc(h.source, 20)}</span>{extra} {where}<br>{esc(h.statement, 1200)}</p>"
        + (f'<p class="cites">Evidence: {cites}</p>' if cites else "")
        + (f'<ul class="signals">{signals}</ul>' if signals else "")
        + "</li>"
    )


def _hypotheses(a: Analysis | None, known: set[str]) -> str:
    if a is None or not a.hypotheses:
        return ""
    items = "".join(_hypothesis(n, h, known) for n, h in enumerate(a.hypotheses[:MAX_HYPOTHESES]))
    more = len(a.hypotheses) - MAX_HYPOTHESES
    rows = []
    if a.llm is not None:
        llm = a.llm
        text = f"{esc(llm.status, 20)}" + (f": {esc(llm.reason, 300)}" if llm.reason else "")
        if llm.model:
            text += f" ({esc(llm.model, 80)}, {llm.latency_ms:.0f} ms)"
        rows.append(("LLM", text))
    if a.updated_at is not None:
        rows.append(("Updated", f"<time>{ts(a.updated_at)}</time>"))
    return (
        f'<section id="hypotheses"><h2>All hypotheses ({len(a.hypotheses)})</h2>'
        f'<ol class="hyps">{items}</ol>'
        + (f'<p class="note">{more} more not shown.</p>' if more > 0 else "")
        + _kv(rows)
        + "</section>"
    )


def _deploys(page: Page, known: set[str]) -> str:
    b, a = page.evidence, page.analysis
    if b is None or not b.deploy:
        return ""
    verdicts = {v.service: v for v in a.deploys} if a is not None else {}
    start = b.alert.starts_at
    timed = [d for d in b.deploy[:MAX_DEPLOYS] if d.deploy_time is not None]
    untimed = [d for d in b.deploy[:MAX_DEPLOYS] if d.deploy_time is None]
    timed.sort(key=lambda d: d.deploy_time or start)
    rows: list[tuple[float, str]] = []
    for d in timed:
        assert d.deploy_time is not None
        try:
            before = (start - d.deploy_time).total_seconds() / 60
        except TypeError:
            before = d.minutes_before_alert or 0.0
        v = verdicts.get(d.service)
        verdict = v.verdict if v is not None else ""
        ver = " ".join(
            x
            for x in (
                esc(d.current_version or "", 80),
                f"({esc(d.current_commit, 80)})" if d.current_commit else "",
            )
            if x
        )
        prev = ""
        if d.previous_version or d.previous_commit:
            prev = " ← " + esc(d.previous_version or "", 80)
            if d.previous_commit:
                prev += f" ({esc(d.previous_commit, 80)})"
        tag = f' <span class="tag {verdict}">{verdict.replace("_", " ")}</span>' if verdict else ""
        why = f' <span class="sub">{esc(v.reason, 300)}</span>' if v is not None else ""
        role = f' <span class="note">{esc(d.role, 20)}</span>' if d.role != "other" else ""
        src = f' <span class="src">per {esc(d.deploy_time_source or "", 40)}</span>'
        ids = (list(v.evidence_ids) if v is not None else []) or _deploy_items(b, d.service)
        rows.append(
            (
                -before,
                f'<li class="{verdict}"><span class="when">{_rel(before)}</span><span>'
                f"<b>{esc(d.service, 120)}</b> {ver}{prev}{tag}{role}{src}{why} "
                f"{_cite(ids, known)}</span></li>",
            )
        )
    rows.append(
        (
            0.0,
            '<li class="alert"><span class="when">T0</span><span>alert started '
            f"<time>{ts(start)}</time></span></li>",
        )
    )
    rows.sort(key=lambda r: r[0])
    out = [
        '<section id="deploys"><h2>Deploy timeline</h2><ol class="timeline">',
        "".join(r[1] for r in rows),
        "</ol>",
    ]
    if untimed:
        items = []
        for d in untimed:
            ver = esc(d.current_version or "", 80)
            if d.current_commit:
                ver += f" ({esc(d.current_commit, 80)})"
            items.append(f"<li><b>{esc(d.service, 120)}</b> {ver}</li>")
        out.append(
            '<h3>No deploy found in the lookback window</h3><ul class="nodeploy">'
            + "".join(items)
            + "</ul>"
        )
    out.append("</section>")
    return "".join(out)


def _rel(minutes_before: float) -> str:
    if abs(minutes_before) < 0.05:
        return "T0"
    if minutes_before > 0:
        return f"T&minus;{minutes_before:.1f} min"
    return f"T+{-minutes_before:.1f} min"


def _links(page: Page) -> str:
    entries: list[tuple[int, str, str, str]] = []
    b = page.evidence
    if b is not None:
        for link in b.links:
            note = "from the alert" if link.from_alert else link.kind.replace("_", " ")
            entries.append((_LINK_ORDER.get(link.kind, 9), link.title, link.url, note))
    kinds = {link.kind for link in b.links} if b is not None else set()
    if page.runbook_url and "runbook" not in kinds:
        entries.append((2, "Runbook", page.runbook_url, "from the alert"))
    if page.dashboard_url and "dashboard" not in kinds:
        entries.append((3, "Dashboard", page.dashboard_url, "from the alert"))
    if page.external_url:
        entries.append((6, "Alertmanager", page.external_url, "where the alert came from"))
    entries.sort(key=lambda e: e[0])
    seen: set[str] = set()
    out = []
    for _, title, url, note in entries:
        href = safe_href(url)
        if href is None or url in seen:
            continue
        seen.add(url)
        out.append(
            f'<li><a href="{href}" rel="noopener noreferrer nofollow">{esc(title, 160)}</a> '
            f'<span class="note">{esc(note, 40)}</span></li>'
        )
        if len(out) >= MAX_LINKS:
            break
    if not out:
        return ""
    return '<section id="links"><h2>Links</h2><ul>' + "".join(out) + "</ul></section>"


def _no_evidence(page: Page) -> str:
    """Why a page holds no evidence: a reader must not take absence for "nothing found"."""
    if page.status == "resolved" and page.resolves is not None:
        r = int(page.resolves)
        why = (
            "This is a resolution: evidence is gathered for firing alerts only; it is on "
            f'<a href="/pages/{r}">page {r}</a>.'
        )
    elif page.status == "resolved" and page.resolved_at is None:
        why = "This is a resolution: evidence is gathered for firing alerts only."
    elif page.reasons and NO_SOURCES not in page.reasons:
        why = "Gathering did not finish in time or failed: " + esc(
            "; ".join(page.reasons[:MAX_REASONS]), 1200
        )
    else:
        why = (
            "No evidence was gathered: no evidence source (sources.prometheus, sources.tempo, "
            "sources.loki) is configured, so this page shows the alert only."
        )
    return f'<section id="evidence"><h2>Evidence</h2><p id="no-evidence">{why}</p></section>'


def _evidence(page: Page) -> str:
    b = page.evidence
    if b is None:
        return _no_evidence(page)
    by_source = Counter(i.source for i in b.items)
    by_kind = Counter(i.kind for i in b.items)
    bu = b.budget
    rows = [
        (
            "Coverage",
            f"{len(b.items)} items: "
            + ", ".join(f"{esc(k, 20)} {n}" for k, n in sorted(by_source.items()))
            + ' <span class="note">('
            + ", ".join(f"{esc(k, 20)} {n}" for k, n in sorted(by_kind.items()))
            + ")</span>",
        ),
        (
            "Budget",
            f"{int(bu.tokens_estimated)}/{int(bu.token_budget)} tokens, "
            f"{int(bu.items_kept)} kept, {int(bu.items_dropped)} dropped",
        ),
    ]
    st = b.stats
    if st.elapsed_ms or st.backend_requests:
        reqs = ", ".join(f"{esc(k, 20)} {int(n)}" for k, n in sorted(st.backend_requests.items()))
        rows.append(
            (
                "Gathered",
                f"in {st.elapsed_ms:.0f} ms"
                + (" (timed out)" if st.timed_out else "")
                + (f"; requests: {reqs}" if reqs else ""),
            )
        )
    if b.no_standout:
        rows.append(("Nothing stands out", esc(b.no_standout, 600)))
    out = ['<section id="evidence"><h2>Evidence</h2>', _kv(rows)]
    if b.missing:
        out.append(
            '<h3 id="missing">Missing</h3><table><tr><th>source</th><th>what</th>'
            "<th>reason</th><th>query</th></tr>"
        )
        for m in b.missing[:MAX_MISSING]:
            out.append(
                f"<tr><td>{esc(m.source, 20)}</td><td>{esc(m.what, 200)}</td>"
                f"<td>{esc(m.reason, 400)}</td><td><code>{esc(m.query, 300)}</code></td></tr>"
            )
        out.append("</table>")
        if len(b.missing) > MAX_MISSING:
            out.append(f'<p class="note">{len(b.missing) - MAX_MISSING} more missing.</p>')
    else:
        out.append('<p class="note" id="missing">Every configured source answered.</p>')
    if b.findings:
        out.append(
            "<h3>Findings</h3><ul>"
            + "".join(f"<li>{esc(f, 400)}</li>" for f in b.findings[:10])
            + "</ul>"
        )
    out.append("<h3>Items</h3>")
    for item in b.items[:MAX_ITEMS]:
        out.append(_item(item))
    if len(b.items) > MAX_ITEMS:
        out.append(f'<p class="note">{len(b.items) - MAX_ITEMS} more items not shown.</p>')
    out.append("</section>")
    return "".join(out)


def _item(item: EvidenceItem) -> str:
    detail = ""
    if item.span is not None:
        s = item.span
        attrs = _chips(s.attributes.items(), MAX_ATTRS, 300)
        res = _chips(s.resource.items(), 10, 120)
        exc = "".join(
            f"<pre>{esc(e.type, 200)}: {esc(e.message, 600)}"
            + (f"\n{esc(e.stacktrace, 1500)}" if e.stacktrace else "")
            + "</pre>"
            for e in s.exceptions[:3]
        )
        detail = (
            f'<p class="sub">trace <code>{esc(s.trace_id, 64)}</code> span '
            f"<code>{esc(s.span_id, 32)}</code> · {esc(s.kind, 40)} · depth {int(s.depth)}"
            f"{' · critical path' if s.on_critical_path else ''}</p>"
            + (f"<p>{attrs}</p>" if attrs else "")
            + (f'<p class="sub">resource: {res}</p>' if res else "")
            + exc
        )
    elif item.log is not None:
        ln = item.log
        detail = (
            f'<p class="sub">{ts_ns(ln.ts_ns)} · {esc(ln.service, 80)}'
            + (f" · trace <code>{esc(ln.trace_id, 64)}</code>" if ln.trace_id else "")
            + f"</p><pre>{esc(ln.line, MAX_LOG_CHARS)}</pre>"
        )
    elif item.template is not None:
        t = item.template
        detail = (
            f'<p class="sub">{int(t.count)}&times; {esc(t.service, 80)}</p>'
            f"<pre>{esc(t.example, 1000)}</pre>"
        )
    elif item.exemplar is not None:
        e = item.exemplar
        detail = (
            f'<p class="sub">{esc(e.role, 10)} trace <code>{esc(e.trace_id, 64)}</code> value '
            f"{e.value:g}: {esc(e.reason, 300)}</p>"
        )
    elif item.deploy is not None:
        d = item.deploy
        detail = (
            f'<p class="sub">{esc(d.source, 30)} · {esc(d.service, 120)} '
            f"{esc(d.version or '', 80)} {esc(d.commit or '', 80)}"
            + (f" · <time>{ts(d.time)}</time>" if d.time is not None else "")
            + f"</p><p>{esc(d.detail, 300)}</p>"
        )
    query = f'<p class="sub">query: <code>{esc(item.query, 500)}</code></p>' if item.query else ""
    return (
        f'<div class="ev" id="{anchor(item.id)}"><h3><code>{esc(item.id, 200)}</code> '
        f'<span class="kind">{esc(item.kind, 20)}</span> '
        f'<span class="src">{esc(item.source, 20)}</span></h3>'
        f"<p>{esc(item.summary, 800)}</p>{detail}{query}</div>"
    )


def _alerts(page: Page) -> str:
    common = page.labels
    rows = []
    for a in page.alerts[:MAX_LISTED_ALERTS]:
        own = [(k, v) for k, v in a.labels.items() if common.get(k) != v]
        src = safe_href(a.generator_url)
        link = f'<a href="{src}" rel="noopener noreferrer nofollow">source</a>' if src else ""
        rows.append(
            f'<tr><td>{esc(a.status, 20)}</td><td class="t">{ts(a.starts_at)}</td>'
            f'<td class="t">{ts(a.ends_at)}</td>'
            f"<td>{_chips(own, MAX_ALERT_LABELS, 120) or _COMMON}"
            f"</td><td>{link}</td></tr>"
        )
    more = max(int(page.truncated_alerts), int(page.alert_count) - len(rows))
    labels = _chips(sorted(common.items())[:MAX_LABELS], MAX_LABELS, 300)
    # URLs are links, shown under Links when they are safe, never as text to copy.
    anns = [
        (k, v)
        for k, v in page.annotations.items()
        if k not in ("summary", "description") and not k.endswith("_url")
    ][:MAX_ANNOTATIONS]
    ann_rows = "".join(f"<tr><th>{esc(k, 120)}</th><td>{esc(v, 600)}</td></tr>" for k, v in anns)
    return (
        f'<section id="alerts"><h2>Alerts in the group ({int(page.alert_count)})</h2>'
        f"<p>Common labels: {labels or _NONE}</p>"
        + (f'<table class="anns">{ann_rows}</table>' if ann_rows else "")
        + "<table><tr><th>status</th><th>started</th><th>ended</th><th>labels</th><th></th>"
        "</tr>"
        + "".join(rows)
        + "</table>"
        + (f'<p class="note">{more} more alerts not listed.</p>' if more > 0 else "")
        + "</section>"
    )


def _deliveries(deliveries: list[DeliveryRecord] | None) -> str:
    if not deliveries:
        return ""
    rows = []
    for d in deliveries[:MAX_DELIVERIES]:
        at = ts(datetime.fromtimestamp(d.delivered_at, UTC)) if d.delivered_at else ""
        state = esc(d.state, 20)
        if d.kind != "page":
            state += f" ({esc(d.kind, 20)})"
        if d.state == "pending" and d.next_try:
            due = ts(datetime.fromtimestamp(d.next_try, UTC))
            state += f'<br><span class="note">next try {due}</span>'
        rows.append(
            f"<tr><td>{esc(d.notifier, 60)}</td><td>{state}</td>"
            f'<td>{int(d.attempts)}</td><td class="t">{at}</td>'
            f"<td>{esc(d.last_error or '', 300)}</td></tr>"
        )
    return (
        '<section id="deliveries"><h2>Deliveries</h2><table><tr><th>notifier</th><th>state</th>'
        "<th>attempts</th><th>delivered</th><th>last error</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def _footer(page: Page) -> str:
    timings = ", ".join(f"{esc(k, 20)} {v:.0f} ms" for k, v in page.timings.items())
    pid = int(page.id)
    return (
        f"<footer>page {pid} · receiver {esc(page.receiver, 120)} · group "
        f"<code>{esc(page.group_key, 200)}</code> · dedup <code>{esc(page.dedup_key, 80)}</code>"
        + (f" · {timings}" if timings else "")
        + f' · <a href="/api/v1/pages/{pid}">JSON</a> · <a href="/pages">all pages</a>'
        " · alert-enricher</footer>"
    )


def render_page(page: Page, *, deliveries: list[DeliveryRecord] | None = None) -> str:
    """The whole HTML document for one page."""
    b = page.evidence
    known = {i.id for i in b.items} if b is not None else set()
    name, service, _ = _names(page)
    status = "RESOLVED" if page.status == "resolved" or page.resolved_at is not None else "FIRING"
    title = esc(f"[{status}] {name}" + (f" · {service}" if service else ""), 200)
    return _doc(
        title,
        (
            _header(page),
            _cause(page, known),
            _facts(page, known),
            _trace(b),
            _logs(b, known),
            _hypotheses(page.analysis, known),
            _deploys(page, known),
            _links(page),
            _evidence(page),
            _alerts(page),
            _deliveries(deliveries),
            _footer(page),
        ),
    )


def _index_row(rec: PageRecord) -> str:
    doc = rec.doc if isinstance(rec.doc, dict) else _loads(rec.doc)
    labels = doc.get("labels") if isinstance(doc.get("labels"), dict) else {}
    name = labels.get("alertname") or "alert"
    where = " · ".join(str(x) for x in (labels.get("service"), labels.get("environment")) if x)
    hyp = ""
    analysis = doc.get("analysis")
    if isinstance(analysis, dict) and isinstance(analysis.get("hypotheses"), list):
        first = analysis["hypotheses"][0] if analysis["hypotheses"] else None
        if isinstance(first, dict):
            hyp = str(first.get("statement", ""))
    paged = datetime.fromtimestamp(rec.paged_at, UTC)
    states = ", ".join(f"{esc(d.notifier, 40)} {esc(d.state, 20)}" for d in rec.deliveries[:6])
    pid = int(rec.id)
    return (
        f'<tr><td><a href="/pages/{pid}">{pid}</a></td>'
        f'<td><span class="badge st-{"resolved" if rec.status == "resolved" else "firing"}">'
        f"{esc(rec.status, 20)}</span>"
        + ('<span class="badge st-degraded">degraded</span>' if rec.degraded else "")
        + f"</td><td>{esc(doc.get('severity') or '', 40)}</td>"
        f'<td><a href="/pages/{pid}">{esc(name, 160)}</a><br><span class="note">'
        f"{esc(where, 160)}</span></td><td>{esc(hyp, 200)}</td>"
        f'<td class="t">{ts(paged)}</td><td class="note">{states}</td></tr>'
    )


def _loads(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def render_index(records: list[PageRecord], *, older: int | None = None) -> str:
    """Recent pages, newest first; `older` is the `before=` cursor of the next, older batch."""
    rows = "".join(_index_row(r) for r in records)
    pager = ""
    if older is not None:
        pager = f'<nav class="pager"><a href="/pages?before={int(older)}">Older pages</a></nav>'
    body = (
        '<section id="pages"><h1>Pages</h1>'
        + (
            "<table><tr><th>id</th><th>status</th><th>severity</th><th>alert</th>"
            "<th>likely cause</th><th>paged</th><th>deliveries</th></tr>" + rows + "</table>"
            if rows
            else '<p class="note">No pages.</p>'
        )
        + pager
        + "</section>"
    )
    return _doc("Pages · alert-enricher", (body,))


def render_error(status: int, message: str) -> str:
    """A small HTML answer for 400/401/404: same headers and stylesheet as a page."""
    return _doc(
        f"{int(status)} · alert-enricher",
        (
            f'<section id="error"><h1>{int(status)}</h1><p>{esc(message, 300)}</p>'
            '<p><a href="/pages">All pages</a></p></section>',
        ),
    )


__all__ = [
    "CSP",
    "HTML_HEADERS",
    "page_from_record",
    "render_error",
    "render_index",
    "render_page",
]
