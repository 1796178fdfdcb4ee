"""fragile: an alert whose set of series is picked anew on every evaluation.

Why: an alert is identified by the labels of the series its query returns. `topk()`,
`bottomk()`, `limitk()` and `limit_ratio()` choose *which* series to return at each evaluation,
and the choice moves as values cross each other: the series that drops out resolves its alert,
the one that comes in starts pending from zero, and the alert flaps and re-notifies without
anything having recovered (pint's promql/fragile). Only a sampler whose own series reach the
alert (through comparisons, arithmetic and functions) is reported: wrapped in another
aggregation (`count(topk(...))`, `max(...)`), behind `scalar()`, or choosing among groups of
one series (`topk(1, sum(...))`, `topk by (job) (1, sum by (job) (...))`) the pick does not
name the alerts; in the right side of `and`/`unless` it only filters, and on the "one" side of
`group_left`/`group_right` (`topk by (pod) (1, kube_pod_owner)`, a common de-duplication) it
only lends labels: both are left alone. Recording rules are not checked: a recorded top-10 is
a fine input for a dashboard.

Bad:

    - alert: TopTalkerHighTraffic
      expr: topk(3, sum by (instance) (rate(node_network_receive_bytes_total[5m]))) > 1e8
      for: 10m

Good:

    - alert: HostHighTraffic
      expr: sum by (instance) (rate(node_network_receive_bytes_total[5m])) > 1e8
      for: 10m
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import Agg, Bin, Call, Neg, Node, output_labels

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "fragile"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

SAMPLERS = frozenset(("topk", "bottomk", "limitk", "limit_ratio"))
# Functions whose result is not the input's series (or is a scalar).
_NOT_PASSING = frozenset(("absent", "absent_over_time", "scalar", "vector", "time"))


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or rule.query is None:
        return []
    ops = list(dict.fromkeys(a.op for a in _reaching(rule.query.root)))
    if not ops:
        return []
    shown = "/".join(f"{op}()" for op in ops)
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"the alert's series are picked by {shown}, which can return different series on "
            "each evaluation: alerts resolve and fire again as the pick moves",
            "alert on every series over the threshold (drop the topk), or use max()/min() "
            "when one value for the whole group is meant",
            rule.expr_line,
        )
    ]


def _reaching(root: Node) -> list[Agg]:
    """The sampling aggregations whose output series become the alert's series."""
    found: list[Agg] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Neg):
            stack.append(node.expr)
        elif isinstance(node, Bin):  # the right side first: the stack pops the left one first
            if node.op not in ("and", "unless") and node.card != "many-to-one":
                stack.append(node.rhs)
            if node.card != "one-to-many":
                stack.append(node.lhs)
        elif isinstance(node, Call):
            if node.returns == "vector" and node.func not in _NOT_PASSING:
                stack.extend(reversed(node.args))
        elif isinstance(node, Agg) and node.op in SAMPLERS:
            if _picks(node):
                found.append(node)
            stack.append(node.expr)
    return found


def _picks(agg: Agg) -> bool:
    """Whether a group of `agg` can hold more than one series to choose from."""
    only = output_labels(agg.expr).only
    if only is None:
        return True
    if agg.by is not None:
        return not only <= frozenset(agg.by)
    return bool(only & frozenset(agg.without or ())) or (agg.without is None and bool(only))
