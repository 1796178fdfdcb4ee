"""syntax: the rule file must load in Prometheus.

Why: a file `promtool check rules` rejects is a file Prometheus refuses to load, and every alert in
it silently stops evaluating. This check reports what the loader found: YAML that does not parse,
unknown or duplicate fields, duplicate group names, a rule with both or neither of `alert` and
`record`, invalid recording-rule, label and annotation names, PromQL that does not parse,
`for`/`keep_firing_for` durations, and Go template syntax in labels and annotations.

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout"}[5m]) > 0.05
      for: 10minutes
      annotations:
        summary: "{{ $labels.service } errors"

Good:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 0.05
      for: 10m
      annotations:
        summary: "{{ $labels.service }} errors"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, RuleFile, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "syntax"
SEVERITY = Severity.ERROR
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False


def check_file(rf: RuleFile, ctx: Context) -> list[Finding]:
    hint = "promtool check rules rejects this file"
    return [
        Finding(
            rf.path,
            p.line,
            ID,
            SEVERITY if p.severity is None else p.severity,
            p.message,
            p.hint or hint,
        )
        for p in rf.problems
    ]


def check(rule: Rule, ctx: Context) -> list[Finding]:
    hint = "Prometheus will refuse to load this file"
    return [
        rule.finding(
            ID, SEVERITY if p.severity is None else p.severity, p.message, p.hint or hint, p.line
        )
        for p in rule.problems
    ]
