"""exemplars: a page's metric can lead the enricher to a trace.

Why: exemplars are the bridge from an aggregate to one request: a sampled observation carries the
`trace_id` of the request that produced it. Prometheus stores them on histogram `_bucket` series
(and native histograms) and on `_total` counters. A latency alert built on a summary's
`quantile` series or on a latency gauge has no exemplars, so the enricher cannot follow the page
to a trace, its logs and the suspect deploy (warning). An average from `_sum / _count` of one
histogram or summary loses them too (info). Only the latency of served requests is judged
(names with tokens such as http, grpc, rpc, request, response, server, handler, api, latency):
runtime, scrape and probe timings (`go_gc_duration_seconds`, `scrape_duration_seconds`,
`probe_duration_seconds`, `prometheus_*`) have no request behind them, and timestamps or
lags (`*_last_success_timestamp_seconds`, `*_seconds_behind_master`) are not durations.
A ratio over a histogram's `_count` alone (`_count{code=~"5.."} / _count`, or
`outcome="SERVER_ERROR"`) is an error ratio, and `_count` alone is traffic: neither is
reported. An error-rate alert reading request-error gauges only (`http_requests_error_ratio`)
is reported; hardware error gauges (`node_filesystem_device_error`) are not request errors.
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

_SPLIT = re.compile(r"[_:]+|(?<=[a-z])(?=[A-Z])")
_COUNTER_SUFFIX = ("_total", "_count", "_sum", "_bucket")
_RATE_FUNCS = frozenset(("rate", "irate", "increase", "resets", "changes"))
_STATUS_LABELS = frozenset(("status", "code", "status_code", "response_code", "http_status"))
# Names are read as tokens (split at `_`, `:` and camelCase), never as substrings.
_TIME_WORDS = frozenset(("latency", "duration", "durations"))
_TIME_UNITS = frozenset(("seconds", "milliseconds", "ms", "microseconds"))
_NOT_A_DURATION = frozenset(
    ("timestamp", "created", "start", "boot", "expiry", "expiration", "age", "ttl", "uptime",
     "behind", "lag", "last", "since", "expire", "expires", "expired", "expiry", "ssl", "tls",
     "cert", "certificate", "deadline")
)  # fmt: skip
# Served requests: only their latency can have exemplars pointing at a trace.
_REQUEST_WORDS = frozenset(
    ("latency", "http", "grpc", "rpc", "request", "requests", "response", "responses",
     "handler", "handling", "api", "apiserver", "server", "ingress", "upstream", "endpoint",
     "route", "router", "gateway")
)  # fmt: skip
# Runtime, scrape and probe timings: no request behind them, so no trace to follow.
_NOT_REQUESTS = frozenset(("probe", "scrape", "go", "process", "jvm", "prometheus", "node"))
_ERROR_WORDS = frozenset(("error", "errors", "fail", "failed", "failure", "failures", "5xx"))
_CALL_WORDS = frozenset(
    ("request", "requests", "http", "grpc", "rpc", "response", "responses", "call", "calls")
)


def _tokens(name: str) -> list[str]:
    return [t.lower() for t in _SPLIT.split(name) if t]


def _base(name: str) -> str:
    for suffix in _COUNTER_SUFFIX:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _request_latency(name: str) -> bool:
    """A served request's duration: `http_request_duration_seconds`, `api_latency_ms`,
    `grpc_server_handling_seconds`; not `go_gc_duration_seconds`, `probe_duration_seconds`,
    `scrape_duration_seconds`, `backup_last_success_timestamp_seconds`."""
    tokens = _tokens(_base(name))
    if not tokens or tokens[0] in _NOT_REQUESTS or _NOT_A_DURATION.intersection(tokens):
        return False
    timed = bool(_TIME_WORDS.intersection(tokens)) or tokens[-1] in _TIME_UNITS
    timed = timed or "response time" in " ".join(tokens)
    return timed and bool(_REQUEST_WORDS.intersection(tokens))


def _averages(names: list[str]) -> list[str]:
    """Histograms or summaries of request latency whose `x_sum` and `x_count` are both read."""
    sums = {n[: -len("_sum")] for n in names if n.endswith("_sum")}
    counts = {n[: -len("_count")] for n in names if n.endswith("_count")}
    return sorted(b for b in sums & counts if _request_latency(b))


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
    names = list(dict.fromkeys(s.name for s in ex.selectors if s.name))
    line = rule.expr_line
    summaries = sorted(
        {
            s.text()
            for s in ex.selectors
            if s.name and _request_latency(s.name) and any(m.name == "quantile" for m in s.matchers)
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
    averaged = _averages(names)
    if averaged:
        shown = ", ".join(f"{b}_sum / {b}_count" for b in averaged)
        return [
            rule.finding(
                ID,
                Severity.INFO,
                f"latency alert averages {shown}: exemplars live on the _bucket series, so "
                "this page cannot lead to a trace",
                "alert on histogram_quantile(...) over the _bucket series instead",
                line,
            )
        ]
    # `_count` alone, with or without a status filter, is a request or error rate of the
    # histogram, not a latency: nothing to say.
    latency_gauges = [n for n in names if not n.endswith(_COUNTER_SUFFIX) and _request_latency(n)]
    if latency_gauges:
        if rated:
            return []
        return [
            rule.finding(
                ID,
                SEVERITY,
                f"latency alert reads gauge(s) {', '.join(latency_gauges)}, which carry no "
                "exemplars",
                "alert on a histogram's _bucket series so the page links to a trace",
                line,
            )
        ]
    if rated or any(_request_latency(n) for n in names):
        return []
    errors = [n for n in names if _request_errors(n)]
    status = any(
        m.name in _STATUS_LABELS and m.op in ("=", "=~") and m.value.startswith("5")
        for s in ex.selectors
        for m in s.matchers
    )
    if errors or status:
        gauges = [n for n in names if not n.endswith(_COUNTER_SUFFIX)]
        if gauges and len(gauges) == len(names):
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


def _request_errors(name: str) -> bool:
    """`http_requests_error_ratio`, `grpc_client_failures`: failed calls, not hardware errors."""
    tokens = set(_tokens(name))
    return bool(tokens & _ERROR_WORDS) and bool(tokens & _CALL_WORDS)
