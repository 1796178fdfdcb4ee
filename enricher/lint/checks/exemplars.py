"""exemplars: a page's metric can lead the enricher to a trace.

Why: exemplars are the bridge from an aggregate to one request: a sampled observation carries the
`trace_id` of the request that produced it. Prometheus stores them on histogram `_bucket` series
(and native histograms) and on `_total` counters. A latency alert built on a summary's
`quantile` series or on a latency gauge has no exemplars, so the enricher cannot follow the page
to a trace, its logs and the suspect deploy. An average from `_sum / _count` loses them too
(info). A ratio over a histogram's `_count` alone (`_count{code=~"5.."} / _count`) is an error
ratio, not a latency average, and is not reported.
Recording rules in the linted files are followed back to the raw metric. By default only
page-severity alerts are checked (`only_pages: false` checks every alert).

Bad:

    - alert: CheckoutHighLatency
      expr: http_request_duration_seconds{service="checkout",quantile="0.99"} > 0.5
      labels: {severity: critical}

Good:

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99, sum by (le, service) (
          rate(http_request_duration_seconds_bucket{service="checkout"}[5m]))) > 0.5
      labels: {severity: critical}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "exemplars"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {"only_pages": True}
NEEDS_PROMETHEUS = False

_LATENCY = re.compile(r"latency|duration|response_time|request_time")
_TIMED = re.compile(r"latency|duration|response_time|request_time|_seconds$|_milliseconds$|_ms$")
_ERRORS = re.compile(r"(request|http|grpc|rpc|response|call).*(error|fail|5xx)|5xx")
_COUNTER_SUFFIX = ("_total", "_count", "_sum", "_bucket")
_RATE_FUNCS = frozenset(("rate", "irate", "increase", "resets", "changes"))
_STATUS_LABELS = frozenset(("status", "code", "status_code", "response_code", "http_status"))


def _averages(names: list[str]) -> bool:
    """Both `x_sum` and `x_count` of one histogram or summary are read: `_sum / _count`."""
    sums = {n[: -len("_sum")] for n in names if n.endswith("_sum")}
    counts = {n[: -len("_count")] for n in names if n.endswith("_count")}
    return bool(sums & counts)


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert:
        return []
    if ctx.config.option(ID, "only_pages", True) and not ctx.is_page(rule):
        return []
    ex = ctx.expand(rule)
    if ex.unresolved or not ex.selectors:
        return []  # a recording rule defined elsewhere: the raw metric is unknown
    histogram_funcs = any(f.startswith("histogram_") for f in ex.functions)
    rated = bool(ex.functions & _RATE_FUNCS)
    names = [s.name for s in ex.selectors if s.name]
    line = rule.expr_line
    summaries = sorted(
        {
            s.text()
            for s in ex.selectors
            if s.name and _TIMED.search(s.name) and any(m.name == "quantile" for m in s.matchers)
        }
    )
    if summaries:
        return [
            rule.finding(
                ID,
                SEVERITY,
                f"latency alert reads summary quantiles ({', '.join(summaries)}), "
                "which carry no exemplars: the enricher cannot follow it to a trace",
                "export a histogram and alert on histogram_quantile(...) over its _bucket series",
                line,
            )
        ]
    if any(n.endswith("_bucket") for n in names) or histogram_funcs:
        return []
    latency = [n for n in names if _LATENCY.search(n)]
    if latency:
        if all(n.endswith(("_sum", "_count")) for n in latency):
            if not _averages(latency):
                # `_count` alone (often with a status filter) is a request or error rate of
                # the histogram, not a latency: nothing to say.
                return []
            return [
                rule.finding(
                    ID,
                    Severity.INFO,
                    f"latency alert averages {', '.join(sorted(set(latency)))}: exemplars live "
                    "on the _bucket series, so this page cannot lead to a trace",
                    "alert on histogram_quantile(...) over the _bucket series instead",
                    line,
                )
            ]
        gauges = sorted({n for n in latency if not n.endswith(_COUNTER_SUFFIX)})
        if gauges and not rated:
            return [
                rule.finding(
                    ID,
                    SEVERITY,
                    f"latency alert reads gauge(s) {', '.join(gauges)}, which carry no exemplars",
                    "alert on a histogram's _bucket series so the page links to a trace",
                    line,
                )
            ]
        return []
    errors = [n for n in names if _ERRORS.search(n)]
    status = any(
        m.name in _STATUS_LABELS and m.value.startswith("5")
        for s in ex.selectors
        for m in s.matchers
    )
    if (errors or status) and not rated:
        gauges = sorted({n for n in names if not n.endswith(_COUNTER_SUFFIX)})
        if gauges and len(gauges) == len(set(names)):
            return [
                rule.finding(
                    ID,
                    SEVERITY,
                    f"error-rate alert reads gauge(s) {', '.join(gauges)}, which carry no "
                    "exemplars",
                    "compute the ratio from _total counters with rate() so exemplars can "
                    "point at failing requests",
                    line,
                )
            ]
    return []
