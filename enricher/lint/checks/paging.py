"""paging: the configured paging definition matches the alerts that page.

Why: which alerts page decides what the page-only checks look at (symptom-vs-cause, exemplars,
runbook and dashboard annotations, `for`). A team that pages on `pager: pagerduty`, or on
severities `s1`/`sev1`/`p1`, matches none of the default `paging: ['severity=~"critical|page"']`,
and every page-only check would pass silently. This check speaks up when no alert in the linted
files is treated as a page while some carry labels that look like paging. The summary line of
every run says how many alerts were treated as pages, and by which definition.

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels:
        severity: s1
        pager: pagerduty

Good:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels:
        severity: critical
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, RuleFile, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "paging"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_PAGE_SEVERITY = re.compile(
    r"critical|crit|page|pager|paging|emergency|emerg|urgent|high|fatal|blocker|disaster|"
    r"(?:s|sev|sev-|severity|p|prio|priority)[-_]?[012]",
    re.I,
)
_PAGE_LABEL = re.compile(r"pager|pagerduty|paging|page|oncall|on_call|escalat\w*", re.I)
_PAGE_VALUE = re.compile(r"pagerduty|opsgenie|victorops|splunk[-_]?oncall|incident\.io", re.I)


def check(rule: Rule, ctx: Context) -> list[Finding]:
    return []


def check_all(files: list[RuleFile], ctx: Context) -> list[Finding]:
    alerts = [r for f in files for r in f.rules if r.is_alert]
    if not alerts or any(ctx.is_page(r) for r in alerts):
        return []
    looks: Counter[str] = Counter()
    first: Rule | None = None
    for rule in alerts:
        hits = []
        severity = rule.labels.get("severity", "")
        if severity and _PAGE_SEVERITY.fullmatch(severity.strip()):
            hits.append(f"severity={severity}")
        for key, value in rule.labels.items():
            if key != "severity" and (_PAGE_LABEL.fullmatch(key) or _PAGE_VALUE.search(value)):
                hits.append(f"{key}={value}")
        if hits and first is None:
            first = rule
        looks.update(hits)
    if first is None:
        return []
    shown = ", ".join(f"{what} ({n})" for what, n in looks.most_common(4))
    return [
        first.finding(
            ID,
            SEVERITY,
            f"no alert is treated as a page by paging {ctx.config.paging_text()}, "
            f"but these labels look like paging: {shown}",
            "set `paging:` in .enricher-lint.yaml to the labels your routing pages on, e.g. "
            "paging: ['pager=\"pagerduty\"']; until then the page-only checks (symptom, "
            "exemplars, runbook and dashboard annotations, for) skip these alerts",
            first.label_lines.get("severity") or first.keys.get("labels"),
        )
    ]
