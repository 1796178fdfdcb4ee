"""labels: every alert says how bad it is, who owns it and which service it is about.

Policy: the missing-label and allowed-severity findings are house policy (info by default,
warning under `--profile strict`, dropped under `--profile mixin`); a `service` label that
contradicts the query is a bug (error).

Why: routing, paging and the enricher itself key on `severity`, `team` and `service`. An alert
without them lands in a catch-all receiver or pages the wrong team; a `service` label that names
a different service than the query selects sends the on-call engineer to the wrong dashboards,
logs and traces. A label counts as present when the rule sets it or the query keeps it for sure
(`sum by (service) (...)`, or a `service="..."` matcher that survives aggregation).

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels:
        severity: sev1
        service: payments

Good:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels:
        severity: critical
        team: payments
        service: checkout
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "labels"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {
    "required": ["severity", "team", "service"],
    "severities": ["critical", "warning", "info"],
}
NEEDS_PROMETHEUS = False


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or rule.query is None:
        return []
    required = ctx.config.option(ID, "required", OPTIONS["required"])
    allowed = ctx.config.option(ID, "severities", OPTIONS["severities"])
    out = []
    missing = [
        name
        for name in required
        if name not in rule.labels and name not in rule.query.labels.certain
    ]
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"alert has no {names} label" + ("s" if len(missing) > 1 else ""),
                "add them under `labels:` so Alertmanager routes the page to its owner",
                rule.keys.get("labels"),
                policy=True,
            )
        )
    severity = rule.labels.get("severity")
    if severity is not None and "{{" not in severity and allowed and severity not in allowed:
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"severity `{severity}` is not one of {', '.join(allowed)}",
                "routing trees match exact severity values; an unknown one is never paged",
                rule.label_lines.get("severity"),
                policy=True,
            )
        )
    out.extend(_service_agrees(rule))
    return out


def _service_agrees(rule: Rule) -> list[Finding]:
    service = rule.labels.get("service")
    if not service or "{{" in service or rule.query is None:
        return []
    selected = [
        m
        for sel in rule.query.selectors
        for m in sel.matchers
        if m.name == "service" and m.op in ("=", "=~")
    ]
    if not selected or any(_matches(m.op, m.value, service) for m in selected):
        return []
    shown = ", ".join(sorted({f'service{m.op}"{m.value}"' for m in selected}))
    return [
        rule.finding(
            ID,
            Severity.ERROR,
            f"label service={service} disagrees with the query, which selects {shown}",
            "the page would send the on-call engineer to another service's dashboards and traces",
            rule.label_lines.get("service"),
        )
    ]


_ALTERNATIVES = re.compile(r"[\w.\-|]*")


def _matches(op: str, pattern: str, value: str) -> bool:
    if op == "=":
        return pattern == value
    if not _ALTERNATIVES.fullmatch(pattern):
        return True  # a real regex: RE2 and Python differ, and some backtrack badly; do not guess
    return re.fullmatch(pattern, value) is not None
