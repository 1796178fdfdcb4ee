"""symptom: pages fire on what users feel, not on what might cause it.

Why: a page should mean "users are hurting now". Error ratio, latency, traffic, saturation of the
service, SLO burn and blackbox probes measure that. CPU, memory, disk, any `*_up == 0`,
restarts (`process_start_time_seconds`, `kube_pod_container_status_restarts_total`),
kube-state-metrics readiness and replica counts, replication lag, certificate expiry, stale
backups and cron jobs, usage over requests or limits, queue and consumer lag, connections near
their maximum, leader election, cluster health, config reloads and anything node-exporter
reports about the host (`node_*`) are causes: they
page at 3am when nobody is affected and stay quiet when users are failing for another reason.
Such alerts belong at ticket severity, next to a symptom alert that pages.
Recording rules in the linted files are followed back to the series they read. Names are read
as tokens (`slo` is not found in `syslog`, nor `request` in `..._resource_requests`), a 5xx
status matcher makes any metric an error ratio, and an alert that reads any symptom is left
alone. Which alerts page comes from `paging:` in the configuration. The finding names the
series that decided.

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
from functools import lru_cache
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "symptom"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_SPLIT = re.compile(r"[_:]+|(?<=[a-z])(?=[A-Z])")

# Series are classified by the tokens of their names (split at `_` and `:`), never by
# substrings: `slo` is not in `syslog`, `request` is not in `..._resource_requests`.
# Specific causes are tried first (a blackbox probe is a symptom, its certificate expiry a
# cause), then symptoms, then the generic resource causes.
_SPECIFIC_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "certificate expiry",
        re.compile(
            r"(^| )(cert|certificate|x509|ssl|tls)( .*)? (expiry|expiration|expire|expires|after|earliest)( |$)|(^| )x509 cert"  # noqa: E501
        ),
    ),
    ("scrape target down", re.compile(r"^up$| up$")),
    (
        "exporter errors",
        re.compile(
            r"(^| )exporter( .*)? (error|errors|scrape|scrapes)( |$)|(^| )last scrape error"
        ),
    ),
    (
        "cluster membership",
        re.compile(
            r"(^| )(brokers|masters|peers|quorum|members|master|primary) ?(count|up|total|connected)?$|(^| )instance info( |$)"  # noqa: E501
        ),
    ),
    (
        "leader election",
        re.compile(r"(^| )(has leader|leader changes|is leader|activecontrollercount)( |$)"),
    ),
    (
        "config reload failed",
        re.compile(r"(^| )(config|configuration) (last )?reload"),
    ),
    (
        "component health",
        re.compile(r"(^| )(cluster health|health status|healthcheck status|health node status)"),
    ),
    (
        "restarts",
        re.compile(
            r"(^| )restarts?( |$)|^process start time|(^| )boot time( |$)|(^| )start time seconds$"
        ),
    ),
    (
        "replication lag",
        re.compile(
            r"(^| )(replication|replica|slave|standby|follower)( .*)? (lag|delay|behind|seconds behind|lsn)( |$)|(^| )connected slaves|(^| )slave (sql|io) running|(^| )seconds behind master|(^| )(underreplicatedpartitions|offlinepartitionscount|under replicated)"  # noqa: E501
        ),
    ),
    (
        "job or backup staleness",
        re.compile(
            r"(^| )(backup|backups|cron|cronjob|snapshot|batch|bgsave)( |$)|(^| )last (success|successful|run|completion|completed|save)( |$)|^kube (job|cronjob) "  # noqa: E501
        ),
    ),
    (
        "resource over requests or limits",
        re.compile(
            r"(^| )resource (requests|limits)( |$)|(^| )cfs throttled|(^| )resourcequota( |$)|(^| )(cpu|memory) (requests|limits)( |$)"  # noqa: E501
        ),
    ),
    (
        "Kubernetes object state",
        re.compile(
            r"^kube (pod|deployment|statefulset|daemonset|replicaset|node|hpa|horizontalpodautoscaler|job|persistentvolume|persistentvolumeclaim|endpoint|namespace)( |$)"  # noqa: E501
        ),
    ),
)
_SYMPTOM = re.compile(
    r"(^| )(5xx|latency|slo|sli|slis|slos|burn|burnrate|budget|availability|apdex|"
    r"throughput|qps|rps|saturation|probe success|probe http|probe duration|probe dns|"
    r"probe icmp|blackbox|synthetic|uptime check)( |$)"
    r"|(^| )(http|grpc|rpc|api|apiserver|requests?|responses?|handler|handled|ingress|"
    r"server requests|client requests)( |$)"
)
_GENERIC_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("CPU", re.compile(r"(^| )cpu( |$)|(^| )cpus( |$)")),
    ("memory", re.compile(r"(^| )(memory|mem|heap|oom|rss|memstats|swap|hugepages)( |$)")),
    (
        "disk",
        re.compile(
            r"(^| )(disk|disks|filesystem|fs|inode|inodes|volume|volumes|fsync|wal|diskstats|raid|smart|pv|pvc)( |$)"  # noqa: E501
        ),
    ),
    ("load average", re.compile(r"^node load\d+$|(^| )load(1|5|15)( |$)")),
    ("file descriptors", re.compile(r"(^| )(fds|fd|filefd|file descriptors|open files)( |$)")),
    (
        "queue or consumer lag",
        re.compile(
            r"(^| )(queue|queues|backlog|lag|consumergroup|pending|unacked|ready messages)( |$)"
        ),
    ),
    (
        "connections",
        re.compile(r"(^| )(connections|connection|conns|clients|threads connected|sessions)( |$)"),
    ),
    (
        "network",
        re.compile(
            r"(^| )(network|net|packets|dropped|drops|errs|tcp|conntrack|nf conntrack)( |$)"
        ),
    ),
    ("threads or GC", re.compile(r"(^| )(goroutines|threads|gc|garbage)( |$)")),
    ("clock", re.compile(r"(^| )(timex|ntp|clock|offset seconds)( |$)")),
    ("database locks", re.compile(r"(^| )(deadlocks|lock waits|locks)( |$)")),
    ("hardware", re.compile(r"(^| )(hwmon|temp|temperature|thermal|power|fan|ipmi)( |$)")),
)
_STATUS_LABELS = frozenset(("status", "code", "status_code", "response_code", "http_status"))


def _words(name: str) -> str:
    """`nodeCpuUsage`, `node_cpu:usage` -> "node cpu usage" (camelCase split before lowering)."""
    return " ".join(t.lower() for t in _SPLIT.split(name) if t)


@lru_cache(maxsize=4096)
def classify(name: str) -> tuple[str, str]:
    """("cause", what) / ("symptom", "") / ("unknown", "") for one series or recording name."""
    words = _words(name)
    for what, pattern in _SPECIFIC_CAUSES:
        if pattern.search(words):
            return "cause", what
    if words.startswith("node "):  # node-exporter: the host, never what users get
        for what, pattern in _GENERIC_CAUSES:
            if pattern.search(words):
                return "cause", what
        return "cause", "host state"
    if _SYMPTOM.search(words):
        return "symptom", ""
    for what, pattern in _GENERIC_CAUSES:
        if pattern.search(words):
            return "cause", what
    return "unknown", ""


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or not ctx.is_page(rule):
        return []
    expanded = ctx.expand(rule)
    for sel in expanded.selectors:
        for m in sel.matchers:
            if m.name in _STATUS_LABELS and m.op in ("=", "=~") and m.value.startswith("5"):
                return []  # a 5xx filter: an error ratio, whatever the metric is called
    names = [s.name for s in expanded.selectors if s.name]
    names += expanded.unresolved
    if not names:
        return []
    causes: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        kind, what = classify(name)
        if kind == "symptom":
            return []
        if kind == "cause":
            causes.setdefault(what, []).append(name)
    if not causes:
        return []  # only series we know nothing about: stay silent
    shown = "; ".join(f"{what} ({', '.join(sorted(set(ns)))})" for what, ns in causes.items())
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"page alert watches a cause, not a symptom users feel: {shown}",
            "page on the error ratio, latency, traffic or SLO burn it leads to; "
            "route this one as a ticket (a non-paging severity)",
            rule.label_lines.get("severity"),
        )
    ]
