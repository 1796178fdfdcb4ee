"""live: the rule matches what a running Prometheus actually has (only with `--prometheus`).

Why: a rule can be perfect on paper and still never fire: the metric was renamed, a matcher
filters everything out, the "counter" is a gauge, the histogram has no exemplars because exemplar
storage is off or the client never attaches trace IDs, or the label a template prints is not
on the series. Each question is one cheap query:

- series exist: `count(last_over_time(selector[2h]))` (the lookback is `lookback` in the config);
- type: `/api/v1/metadata` (rate() over a gauge, histogram_quantile() over a non-histogram);
- exemplars: `/api/v1/query_exemplars` for the last hour, for latency and error series of pages;
- template labels: `count(last_over_time(selector{label!=""}[2h]))`.

Metrics recorded by rules in the linted files are skipped: they may not be deployed yet.

Bad (the service exports `http_server_duration_seconds_bucket`):

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99,
          sum by (le) (rate(http_request_duration_seconds_bucket[5m]))) > 0.5

Good:

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99,
          sum by (le) (rate(http_server_duration_seconds_bucket[5m]))) > 0.5
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import COUNTER_FUNCS, Matcher, Node, Sel, walk
from enricher.lint.templates import parse_template

if TYPE_CHECKING:
    from enricher.lint.checks import Context
    from enricher.lint.live import Live

ID = "live"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = True

_TRACEABLE = re.compile(r"_bucket$|(request|error|fail|http|grpc|rpc).*_total$")
_SYNTHETIC = frozenset(("ALERTS", "ALERTS_FOR_STATE"))


def check(rule: Rule, ctx: Context) -> list[Finding]:
    live: Live | None = ctx.prometheus
    if live is None or rule.query is None:
        return []
    out: list[Finding] = []
    wrapped = {
        id(c.args[0]): c.func for c in rule.query.calls if c.args and isinstance(c.args[0], Sel)
    }
    quantiled = {
        id(n)
        for c in rule.query.calls
        if c.func == "histogram_quantile" and len(c.args) == 2
        for n in _selectors(c.args[1])
    }
    present: list[Sel] = []
    seen: set[str] = set()
    for sel in rule.query.selectors:
        if not _raw(sel, ctx) or sel.text() in seen:
            continue
        seen.add(sel.text())
        found = live.count(sel)
        if found is None:
            continue
        if found == 0:
            out.append(_missing(rule, sel, live))
            continue
        present.append(sel)
        kind = live.metric_type(sel.name or "")
        func = wrapped.get(id(sel))
        if func in COUNTER_FUNCS and kind == "gauge":
            out.append(
                rule.finding(
                    ID,
                    Severity.ERROR,
                    f"{func}() over `{sel.name}`, which Prometheus' metadata says is a gauge",
                    "use deriv()/delta() or the gauge's value; rate() is for counters",
                    rule.expr_line,
                )
            )
        if id(sel) in quantiled and kind not in (None, "histogram", "gaugehistogram"):
            out.append(
                rule.finding(
                    ID,
                    Severity.ERROR,
                    f"histogram_quantile() over `{sel.name}`, which Prometheus' metadata says "
                    f"is a {kind}, not a histogram",
                    "point it at the histogram's _bucket series",
                    rule.expr_line,
                )
            )
    if rule.is_alert:
        out.extend(_exemplars(rule, ctx, live))
        out.extend(_template_labels(rule, present, live))
    return out


def _selectors(node: Node) -> list[Sel]:
    return [n for n in walk(node) if isinstance(n, Sel)]


def _raw(sel: Sel, ctx: Context) -> bool:
    return bool(sel.name) and not ctx.recorded(sel.name) and (sel.name not in _SYNTHETIC)


def _missing(rule: Rule, sel: Sel, live: Live) -> Finding:
    name = sel.name or ""
    total = live.count(Sel(name, ())) if sel.matchers else 0
    if total:
        msg = f"`{sel.text()}` matched no series in the last {live.window} ({name} has {total})"
        hint = "a matcher filters every series out: check label names and values"
    else:
        msg = f"`{name}` has no series in the last {live.window}"
        hint = "check the metric name and that the job exporting it is scraped"
    return rule.finding(ID, SEVERITY, msg, hint, rule.expr_line)


def _exemplars(rule: Rule, ctx: Context, live: Live) -> list[Finding]:
    if not ctx.is_page(rule):
        return []
    candidates = [
        s
        for s in ctx.expand(rule).selectors
        if _raw(s, ctx) and _TRACEABLE.search(s.name or "") and live.count(s)  # a missing
    ]  # series is reported once, as missing
    if not candidates:
        return []
    counts = [live.exemplars(s) for s in candidates]
    if any(c is None or c > 0 for c in counts):
        return []
    shown = ", ".join(sorted({s.text() for s in candidates}))
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"no exemplars for {shown} in the last hour: the enricher will find no trace "
            "to follow from this page",
            "enable --enable-feature=exemplar-storage, scrape with OpenMetrics and attach the "
            "trace ID when the client observes the value",
            rule.expr_line,
        )
    ]


def _template_labels(rule: Rule, present: list[Sel], live: Live) -> list[Finding]:
    q = rule.query
    if q is None or not present:
        return []
    made = {
        n.value
        for c in q.calls
        if c.func in ("label_replace", "label_join") and len(c.args) > 1
        for n in [c.args[1]]
        if hasattr(n, "value")
    }
    out = []
    fields = [(k, v, rule.label_lines) for k, v in rule.labels.items()]
    fields += [(k, v, rule.annotation_lines) for k, v in rule.annotations.items()]
    for key, value, lines in fields:
        t = parse_template(value)
        for ref in t.label_refs:
            if ref in t.guarded or ref in made or not q.labels.may_have(ref):
                continue
            counts = [live.count(s, Matcher(ref, "!=", "")) for s in present]
            if any(c is None or c > 0 for c in counts):
                continue
            line = lines.get(key)
            out.append(
                rule.finding(
                    ID,
                    SEVERITY,
                    f"{key!r} prints `$labels.{ref}`, but no series the query reads has a "
                    f"`{ref}` label in the last {live.window}",
                    "use a label the series carry (see /api/v1/series) or add it at scrape time",
                    line,
                )
            )
    return out
