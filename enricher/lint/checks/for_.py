"""for: an alert waits long enough to be real before it pages (check id `for`).

Why: without `for`, one bad evaluation (a deploy's first seconds, a scrape hiccup) pages
someone. A `for` shorter than the `rate()` window adds little: the window already smooths that
long, so a blip still pages. Multi-window multi-burn-rate alerts (SRE workbook, chapter 5) are
the exception: the short window is the guard, and their shape is checked instead. Each pair
compares a long and a short window (about 12:1: 1h/5m, 6h/30m, 1d/2h, 3d/6h) against the same
burn-rate factor (14.4, 6, 3, 1) joined by `and`; pairs are joined by `or`.

(The module is `for_.py` because `for` is a Python keyword.)

Bad:

    - alert: CheckoutErrorBudgetBurn
      expr: |
        slo:errors:ratio_rate1h{service="checkout"} > (14.4 * 0.001)
        or
        slo:errors:ratio_rate5m{service="checkout"} > (14.4 * 0.001)
      labels: {severity: critical}

Good:

    - alert: CheckoutErrorBudgetBurn
      expr: |
        (slo:errors:ratio_rate1h{service="checkout"} > (14.4 * 0.001)
         and slo:errors:ratio_rate5m{service="checkout"} > (14.4 * 0.001))
        or
        (slo:errors:ratio_rate6h{service="checkout"} > (6 * 0.001)
         and slo:errors:ratio_rate30m{service="checkout"} > (6 * 0.001))
      for: 2m
      labels: {severity: critical}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from enricher.lint.durations import format_duration, parse_duration
from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import Bin, Node, Num, Sel, walk

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "for"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

# SRE workbook, table 5-8: burn-rate factor -> long window (the short one is 1/12 of it).
WORKBOOK = {14.4: 3600.0, 6.0: 6 * 3600.0, 3.0: 86400.0, 1.0: 3 * 86400.0}
_NAME_WINDOW = re.compile(r"(\d+[smhdwy])$")


@dataclass(frozen=True, slots=True)
class Term:
    """One `error_ratio_over_window > factor * budget` comparison."""

    window: float
    factor: float | None


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or rule.query is None:
        return []
    issues = burn_rate_issues(rule.query.root)
    if issues is not None:
        return [rule.finding(ID, sev, msg, hint, rule.expr_line) for sev, msg, hint in issues]
    if "absent" in rule.query.functions():
        return []  # the promql check reports absent() without for
    line = rule.keys.get("for")
    if ctx.is_page(rule) and not rule.for_seconds:
        return [
            rule.finding(
                ID,
                SEVERITY,
                "page alert without `for`: a single bad evaluation wakes someone up",
                "add for: (e.g. 5m) so the condition has to hold before it pages",
                line,
            )
        ]
    ranges = rule.query.counter_ranges()
    if rule.for_seconds and ranges and rule.for_seconds < min(ranges):
        return [
            rule.finding(
                ID,
                SEVERITY,
                f"for: {format_duration(rule.for_seconds)} is shorter than the rate window "
                f"[{format_duration(min(ranges))}]",
                "make for at least as long as the window, or shorten the window",
                line,
            )
        ]
    return []


def burn_rate_issues(root: Node) -> list[tuple[Severity, str, str]] | None:
    """None when `root` is not a multi-window burn-rate alert; else what is wrong with it."""
    if not (isinstance(root, Bin) and root.op in ("and", "or")):
        return None  # one comparison: not multi-window
    tree = _tree(root)
    if tree is None or isinstance(tree, Term):
        return None
    groups = [_flatten(branch, "and") for branch in _flatten(tree, "or")]
    if any(not isinstance(t, Term) for g in groups for t in g):
        return None
    terms: list[Term] = [t for g in groups for t in g]  # type: ignore[misc]
    if len({t.window for t in terms}) < 2:
        return None
    issues: list[tuple[Severity, str, str]] = []
    singles: list[Term] = []
    for group in groups:
        if len(group) == 1:
            singles.append(group[0])  # type: ignore[arg-type]
            continue
        factors = sorted({t.factor for t in group if t.factor is not None})  # type: ignore[union-attr]
        if len(factors) > 1:
            issues.append(
                (
                    SEVERITY,
                    "burn-rate pairs with different factors ("
                    + ", ".join(f"{f:g}" for f in factors)
                    + ") are joined by `and`, so it pages only when every pair burns",
                    "join the long/short pairs with `or`; `and` belongs inside a pair",
                )
            )
            continue
        if len(group) != 2:
            continue
        long, short = sorted((t.window for t in group), reverse=True)  # type: ignore[union-attr]
        ratio = long / short if short else 0
        if not 8 <= ratio <= 16:
            issues.append(
                (
                    SEVERITY,
                    f"burn-rate pair {format_duration(long)}/{format_duration(short)} is "
                    f"{ratio:.3g}:1; the short window should be about 1/12 of the long one",
                    "use the SRE workbook's pairs: 1h/5m, 6h/30m, 1d/2h, 3d/6h",
                )
            )
        factor = factors[0] if factors else None
        expected = WORKBOOK.get(factor) if factor is not None else None
        if expected is not None and long != expected:
            issues.append(
                (
                    Severity.INFO,
                    f"burn-rate factor {factor:g} goes with a {format_duration(expected)} window "
                    f"in the SRE workbook, not {format_duration(long)}",
                    "14.4 over 1h, 6 over 6h (page); 3 over 1d, 1 over 3d (ticket)",
                )
            )
    by_factor: dict[float | None, set[float]] = {}
    for t in singles:
        by_factor.setdefault(t.factor, set()).add(t.window)
    if any(len(ws) > 1 for ws in by_factor.values()):
        issues.append(
            (
                SEVERITY,
                "the long and short windows of a burn-rate pair are joined by `or`: "
                "a short spike alone pages",
                "join the two windows of a pair with `and`, and the pairs with `or`",
            )
        )
    return issues


def _tree(node: Node) -> Term | tuple | None:
    if isinstance(node, Bin) and node.op in ("and", "or"):
        left, right = _tree(node.lhs), _tree(node.rhs)
        if left is None or right is None:
            return None
        return (node.op, left, right)
    if isinstance(node, Bin) and node.op in (">", ">=") and not node.return_bool:
        windows = set()
        for n in walk(node.lhs):
            if isinstance(n, Sel):
                if n.range is not None:
                    windows.add(n.range)
                elif n.name and ":" in n.name and (m := _NAME_WINDOW.search(n.name)):
                    try:
                        windows.add(parse_duration(m.group(1)))
                    except ValueError:
                        return None
        if len(windows) != 1:
            return None
        return Term(windows.pop(), _factor(node.rhs))
    return None


def _factor(node: Node) -> float | None:
    for n in walk(node):
        if isinstance(n, Bin) and n.op == "*":
            for side in (n.lhs, n.rhs):
                if isinstance(side, Num) and side.value >= 1:
                    return side.value
    return None


def _flatten(tree: Term | tuple, op: str) -> list[Term | tuple]:
    if isinstance(tree, tuple) and tree[0] == op:
        return _flatten(tree[1], op) + _flatten(tree[2], op)
    return [tree]
