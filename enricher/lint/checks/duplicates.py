"""duplicates: the same alert or recorded series is defined once.

Why: two rules that produce the same series make alerts Alertmanager cannot tell apart (or a
recorded series written twice, each rule overwriting the other's samples): one resolves the
other, silences and inhibitions hit both, and whoever edits one copy leaves the other paging
with the old threshold. Two rules are duplicates only when they produce the same series (pint's
rule/duplicate reasoning): the same name (alert or record), the same static labels, and nothing
the query fixes on its output tells them apart. A matcher on a label that survives to the
output (`up{component="api"}` vs `up{component="db"}`), a different `by (...)` label set, or
a `label_replace` value makes different series: 62 copies of one alert, one per `component`,
are 62 different alerts. Alerts in different groups or files whose expressions differ and
select disjoint series (different metrics, or one label pinned to different values) are also
kept apart: they are written for different targets. Recording rules count as duplicates only
when the expression is the same too, since one name is often recorded from several selectors.
Identical copies (same expression and labels) in two groups or files are always reported.
Rules are compared within a directory (files in different directories usually load into
different Prometheus servers).

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
    - alert: ComponentDown
      expr: up{job="kube-apiserver", component="apiserver"} == 0
      labels: {severity: critical}
    - alert: ComponentDown
      expr: up{job="kube-scheduler", component="scheduler"} == 0
      labels: {severity: critical}
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import Str

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "duplicates"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

# Distinct selections compared per bucket of same-name, same-label alerts (keeps a pathological
# file linear; real buckets hold a handful).
_MAX_SCAN = 256


def _key(rule: Rule) -> tuple:
    """Rules with different keys produce different series; equal keys may collide."""
    labels = tuple(sorted(rule.labels.items()))
    where = os.path.dirname(rule.path)
    if rule.is_alert:
        return (where, "alert", rule.name, labels, _output_pins(rule))
    return (where, "record", rule.name, labels, _text(rule))


def _static(rule: Rule) -> tuple:
    return (os.path.dirname(rule.path), rule.kind, rule.name, tuple(sorted(rule.labels.items())))


def _text(rule: Rule) -> str:
    return " ".join(rule.expr.split())


def _output_pins(rule: Rule) -> tuple:
    """What the query fixes on the series it outputs (pint's rule/duplicate reasoning): matchers
    on labels that survive to the alert, the `by` label set, `label_replace` values. Two copies
    that pin `component="a"` and `component="b"` produce different alerts, even with the same
    name and static labels; a label the static labels override tells nothing apart."""
    q = rule.query
    if q is None:
        return ()
    out = q.labels
    pins: set[tuple[str, str, str]] = set()
    for sel in q.selectors:
        for m in sel.matchers:
            if m.name != "__name__" and m.name not in rule.labels and out.may_have(m.name):
                pins.add(m)
    for call in q.calls:
        if call.func in ("label_replace", "label_join"):
            pins.add(("", call.func, "\0".join(a.value for a in call.args if isinstance(a, Str))))
    only = None if out.only is None else tuple(sorted(out.only - rule.labels.keys()))
    return (only, tuple(sorted(pins)))


def _selection(rule: Rule) -> tuple[frozenset[str], dict[str, str]]:
    """The metric names a rule reads and the label values all its selectors agree on."""
    q = rule.query
    names: set[str] = set()
    pins: dict[str, str] = {}
    conflicting: set[str] = set()
    if q is not None:
        for sel in q.selectors:
            if sel.name:
                names.add(sel.name)
            for m in sel.matchers:
                skip = m.op != "=" or m.name == "__name__"
                if not skip and pins.setdefault(m.name, m.value) != m.value:
                    conflicting.add(m.name)
    for name in conflicting:
        del pins[name]
    return frozenset(names), pins


def _disjoint(
    a: tuple[frozenset[str], dict[str, str]], b: tuple[frozenset[str], dict[str, str]]
) -> bool:
    names_a, pins_a = a
    names_b, pins_b = b
    if names_a and names_b and not names_a & names_b:
        return True
    return any(pins_b.get(k, v) != v for k, v in pins_a.items())


class _Bucket:
    """Alerts with one key: the first rule per group, per expression, per selection."""

    __slots__ = ("by_expr", "by_group", "by_selection", "pending")

    def __init__(self) -> None:
        self.by_group: dict[tuple[str, str], Rule] = {}
        self.by_expr: dict[str, Rule] = {}
        self.by_selection: dict[tuple, tuple[tuple[frozenset[str], dict[str, str]], Rule]] = {}
        self.pending: list[Rule] = []  # selections are only worked out when a rule needs them

    def _remember(self, rule: Rule) -> None:
        selection = _selection(rule)
        sig = (selection[0], tuple(sorted(selection[1].items())))
        self.by_selection.setdefault(sig, (selection, rule))

    def add(self, rule: Rule) -> Rule | None:
        """The earlier rule `rule` duplicates, if any; remembers `rule` either way."""
        group = (rule.path, rule.group)
        text = _text(rule)
        found = self.by_group.get(group) or self.by_expr.get(text)
        if found is None and (self.pending or self.by_selection):
            for earlier in self.pending:
                self._remember(earlier)
            self.pending.clear()
            selection = _selection(rule)
            for i, (other, first) in enumerate(self.by_selection.values()):
                if i >= _MAX_SCAN:
                    break
                if not _disjoint(selection, other):
                    found = first
                    break
        self.by_group.setdefault(group, rule)
        self.by_expr.setdefault(text, rule)
        self.pending.append(rule)
        return found


def _index(ctx: Context) -> dict[int, Rule]:
    """Once per run: each duplicate rule -> the earlier rule it repeats."""
    first: dict[int, Rule] = {}
    records: dict[tuple, Rule] = {}
    buckets: dict[tuple, _Bucket] = {}
    # Only rules sharing directory, kind, name and static labels can collide: count those
    # first, so the queries of the (many) rules with no twin are never needed.
    twins = Counter(_static(r) for r in ctx.rules if r.kind)
    for r in ctx.rules:
        if not r.kind or twins[_static(r)] < 2:
            continue
        if r.is_alert and r.query is None:  # a recording rule's key is its text: no parse
            continue
        key = _key(r)
        if r.is_record:
            original = records.setdefault(key, r)
            if original is not r:
                first[id(r)] = original
            continue
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket()
        original = bucket.add(r)
        if original is not None:
            first[id(r)] = original
    return first


def check(rule: Rule, ctx: Context) -> list[Finding]:
    first: dict[int, Rule] | None = ctx.cache.get(ID)
    if first is None:
        first = ctx.cache[ID] = _index(ctx)
    original = first.get(id(rule))
    if original is None:
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
