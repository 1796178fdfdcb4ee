"""symptom: pages fire on what users feel, not on what might cause it.

Why: a page should mean "users are hurting now". Error ratio, latency, traffic, saturation of the
service and SLO burn measure that. CPU, memory, disk, `up == 0`, restarts and queue length are
causes: they page at 3am when nobody is affected and stay quiet when users are failing for
another reason. Such alerts belong at ticket severity, next to a symptom alert that pages.
Recording rules in the linted files are followed back to the series they read.

Bad:

    - alert: CheckoutHighCPU
      expr: sum(rate(container_cpu_usage_seconds_total{service="checkout"}[5m])) > 4
      labels: {severity: critical}

Good:

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99, sum by (le, service) (
          rate(http_request_duration_seconds_bucket{service="checkout"}[5m]))) > 0.5
      labels: {severity: critical}
    - alert: CheckoutHighCPU
      expr: sum(rate(container_cpu_usage_seconds_total{service="checkout"}[5m])) > 4
      labels: {severity: warning}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "symptom"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

# Names that measure what users get. Plain "error"/"fail" is not enough: a disk's
# `node_filesystem_device_error` is still a cause.
_SYMPTOM = re.compile(
    r"5xx|latency|duration|response|request|_bucket|_rpc|grpc_server|http_server|throughput|"
    r"qps|rps|slo|sli|burn|budget|availability|apdex|saturation|^probe_|blackbox"
)
_CAUSES = (
    ("CPU", re.compile(r"cpu")),
    ("memory", re.compile(r"memory|_mem_|memstats|heap|_oom|_rss")),
    ("disk", re.compile(r"disk|filesystem|_fs_|inode|volume_stats")),
    ("scrape target down", re.compile(r"^up$")),
    ("restarts", re.compile(r"restart")),
    ("queue length", re.compile(r"queue|backlog")),
    ("load average", re.compile(r"^node_load\d+$")),
    ("file descriptors", re.compile(r"open_fds|file_descriptors")),
)
_STATUS_LABELS = frozenset(("status", "code", "status_code", "response_code", "http_status"))


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or not ctx.is_page(rule):
        return []
    expanded = ctx.expand(rule)
    names = [s.name for s in expanded.selectors if s.name]
    names += expanded.records + expanded.unresolved
    if not names or any(_SYMPTOM.search(n.lower()) for n in names):
        return []
    for sel in expanded.selectors:
        for m in sel.matchers:
            if m.name in _STATUS_LABELS and m.op in ("=", "=~") and m.value.startswith("5"):
                return []
    causes: dict[str, list[str]] = {}
    for name in names:
        for what, pattern in _CAUSES:
            if pattern.search(name.lower()):
                causes.setdefault(what, []).append(name)
                break
    if not causes:
        return []
    shown = "; ".join(f"{what} ({', '.join(sorted(set(ns)))})" for what, ns in causes.items())
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"page-severity alert watches a cause, not a symptom users feel: {shown}",
            "page on the error ratio, latency, traffic or SLO burn it leads to; "
            "route this one as a ticket (a non-paging severity)",
            rule.label_lines.get("severity"),
        )
    ]
