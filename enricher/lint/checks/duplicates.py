"""duplicates: the same alert (name and labels) is defined once.

Why: two rules that produce the same alert (same name and labels) make alerts Alertmanager
cannot tell apart:
one resolves the other, silences and inhibitions hit both, and whoever edits one copy leaves the
other paging with the old threshold. Labels count whether the rule sets them or the query fixes
them on series that reach the alert: copies of one alert for `component="api"` and
`component="db"` are different alerts. Rules are compared within a directory (files in different
directories usually load into different Prometheus servers). Recording rules count as
duplicates only when the expression is the same too, since one name is often recorded from
several selectors.

Bad:

    - alert: CheckoutHighErrorRate
      expr: job:errors:ratio5m{service="checkout"} > 0.05
      labels: {severity: critical, service: checkout}
    - alert: CheckoutHighErrorRate
      expr: job:errors:ratio5m{service="checkout"} > 0.02
      labels: {severity: critical, service: checkout}

Good:

    - alert: CheckoutHighErrorRate
      expr: job:errors:ratio5m{service="checkout"} > 0.05
      labels: {severity: critical, service: checkout}
    - alert: CheckoutHighErrorRate
      expr: job:errors:ratio5m{service="checkout"} > 0.02
      labels: {severity: warning, service: checkout}
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "duplicates"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False


def _key(rule: Rule) -> tuple:
    labels = tuple(sorted(rule.labels.items()))
    where = os.path.dirname(rule.path)
    if rule.is_alert:
        return (where, "alert", rule.name, labels, _pins(rule))
    return (where, "record", rule.name, labels, " ".join(rule.expr.split()))


def _pins(rule: Rule) -> frozenset[tuple[str, str, str]]:
    """The label values the query fixes on labels that reach the alert (pint's reasoning in
    rule/duplicate): two copies that pin `component="a"` and `component="b"` produce different
    alerts, even with the same name and static labels."""
    q = rule.query
    if q is None:
        return frozenset()
    out = set()
    for sel in q.selectors:
        if sel.has_or:
            continue
        for m in sel.matchers:
            kept = m.name not in rule.labels and q.labels.may_have(m.name)
            if kept and m.name != "__name__" and m.op in ("=", "=~"):
                out.add((m.name, m.op, m.value))
    return frozenset(out)


def check(rule: Rule, ctx: Context) -> list[Finding]:
    first: dict[int, Rule] | None = ctx.cache.get(ID)
    if first is None:  # once per run: each rule -> the first rule with its key
        seen: dict[tuple, Rule] = {}
        first = {id(r): seen.setdefault(_key(r), r) for r in ctx.rules if r.kind and r.query}
        ctx.cache[ID] = first
    original = first.get(id(rule))
    if original is None or original is rule:
        return []
    what = "alert" if rule.is_alert else "recording rule"
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"{what} {rule.name} with the same labels is already defined at "
            f"{original.path}:{original.line}",
            "give each copy distinct labels (e.g. severity) or delete one",
        )
    ]
