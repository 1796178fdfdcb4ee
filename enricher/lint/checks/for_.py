"""for: an alert waits long enough to be real before it pages (check id `for`).

Why: without `for`, one bad evaluation (a deploy's first seconds, a scrape hiccup) pages
someone. A `for` shorter than the `rate()` window adds little: the window already smooths that
long, so a blip still pages. Multi-window multi-burn-rate alerts (SRE workbook, chapter 5) are
the exception: the short window is the guard, and their shape is checked instead. Each pair
compares a long and a short window (about 12:1: 1h/5m, 6h/30m, 1d/2h, 3d/6h) against the same
burn-rate factor (14.4, 6, 3, 1) joined by `and`; pairs are joined by `or`. Only real
burn-rate alerts are judged so: every term compares an error ratio (a division, or a recorded
ratio or burn rate) with a factor times the budget; other `and`-ed thresholds are left alone.

Not reported: event alerts (`increase(x[1d]) > 0`, `changes()`, `resets()`), where any `for`
would stop them firing; conditions that already look back (`avg_over_time(probe_success[1h])`,
a rate window of 15m or more) need no `for`; windows of an hour or more are look-backs, not
smoothing, and are not compared with `for`. The `for` findings are house policy (info); the
burn-rate shape findings are warnings: such an alert pages on the wrong thing.

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
from enricher.lint.promql import Agg, Bin, Call, Node, Num, Sel, walk

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "for"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

# SRE workbook, table 5-8: burn-rate factor -> long window (the short one is 1/12 of it).
WORKBOOK = {14.4: 3600.0, 6.0: 6 * 3600.0, 3.0: 86400.0, 1.0: 3 * 86400.0}
_NAME_WINDOW = re.compile(r"(\d+[smhdwy])$")
_RATIO_NAME = re.compile(r"ratio|burn|error|sli|availability")


@dataclass(frozen=True, slots=True)
class Term:
    """One `error_ratio_over_window > factor * budget` comparison."""

    window: float
    factor: float | None
    ratio: bool = False  # an error ratio: a division, or a recorded ratio/burn rate
    burn: bool = False  # a recorded burn rate (the factor is already divided out)


# Conditions that already look over time: one evaluation of them is not a blip.
_OVER_TIME = frozenset(
    (
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "quantile_over_time",
        "sum_over_time",
        "count_over_time",
        "present_over_time",
        "last_over_time",
        "mad_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "holt_winters",
        "predict_linear",
    )
)
# Event alerts: any `for` would stop them firing (the event is over by the next evaluation).
_EVENTS = frozenset(("changes", "resets"))
_SMOOTHED = 15 * 60.0  # a rate() window this long is already a sustained condition
_LONG_WINDOW = 3600.0  # windows of an hour or more are look-backs, not smoothing


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or rule.query is None:
        return []
    issues = burn_rate_issues(rule.query.root)
    if issues is not None:
        return [rule.finding(ID, sev, msg, hint, rule.expr_line) for sev, msg, hint in issues]
    functions = rule.query.functions()
    if "absent" in functions or "absent_over_time" in functions:
        return []  # the promql check reports absent() without for
    if functions & _EVENTS or _is_event(rule.query.root):
        return []
    line = rule.keys.get("for")
    ranges = _rate_ranges(rule.query.root)
    if ctx.is_page(rule) and not rule.for_seconds:
        if functions & _OVER_TIME or (ranges and min(ranges) >= _SMOOTHED):
            return []
        if not _compares(rule.query.root):
            return []  # `vector(1)` watchdogs and the like; promql reports a missing comparison
        return [
            rule.finding(
                ID,
                Severity.INFO,
                "page alert without `for`: a single bad evaluation wakes someone up",
                "add for: (e.g. 5m) so the condition has to hold before it pages",
                line,
                policy=True,
            )
        ]
    short = [r for r in ranges if r < _LONG_WINDOW]
    if rule.for_seconds and short and rule.for_seconds < min(short):
        return [
            rule.finding(
                ID,
                Severity.INFO,
                f"for: {format_duration(rule.for_seconds)} is shorter than the rate window "
                f"[{format_duration(min(short))}]",
                "make for at least as long as the window, or shorten the window",
                line,
                policy=True,
            )
        ]
    return []


def _rate_ranges(root: Node) -> list[float]:
    """Windows of the rate()/irate()/increase() calls that feed a threshold."""
    out = []
    for n in walk(root):
        if isinstance(n, Call) and n.func in ("rate", "irate", "increase") and n.args:
            arg = n.args[0]
            if isinstance(arg, Sel) and arg.range is not None:
                out.append(arg.range)
    return out


def _compares(root: Node) -> bool:
    return any(
        isinstance(n, Bin) and n.op in (">", "<", ">=", "<=", "==", "!=") and not n.return_bool
        for n in walk(root)
    )


def _is_event(root: Node) -> bool:
    """`increase(x[1d]) > 0`, `increase(x[15m]) >= 1`: something happened, not a level."""
    for n in walk(root):
        if not (isinstance(n, Bin) and n.op in (">", ">=") and isinstance(n.rhs, Num)):
            continue
        if n.rhs.value > 1:
            continue
        lhs = n.lhs
        while isinstance(lhs, Agg):
            lhs = lhs.expr
        if isinstance(lhs, Call) and lhs.func in ("increase", "changes", "resets", "delta"):
            return True
    return False


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
    # Only real burn-rate alerts: every term compares an error ratio against a factor
    # times the budget (`> 14.4 * 0.001`), or reads a recorded burn rate.
    if not all(t.ratio and (t.factor is not None or t.burn) for t in terms):
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
    return list(dict.fromkeys(issues))  # one message per problem, however many pairs


def _tree(node: Node) -> Term | tuple | None:
    if isinstance(node, Bin) and node.op in ("and", "or"):
        left, right = _tree(node.lhs), _tree(node.rhs)
        if left is None or right is None:
            return None
        return (node.op, left, right)
    if isinstance(node, Bin) and node.op in (">", ">=") and not node.return_bool:
        windows = set()
        names = []
        divides = any(isinstance(n, Bin) and n.op == "/" for n in walk(node.lhs))
        for n in walk(node.lhs):
            if isinstance(n, Sel):
                names.append((n.name or "").lower())
                if n.range is not None:
                    windows.add(n.range)
                elif n.name and ":" in n.name and (m := _NAME_WINDOW.search(n.name)):
                    try:
                        windows.add(parse_duration(m.group(1)))
                    except ValueError:
                        return None
        if len(windows) != 1:
            return None
        burn = any("burn" in name for name in names)
        ratio = divides or any(_RATIO_NAME.search(name) for name in names if ":" in name)
        return Term(windows.pop(), _factor(node.rhs), ratio, burn)
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
