"""for: an alert waits long enough to be real before it pages (check id `for`).

Why: without `for`, one bad evaluation (a deploy's first seconds, a scrape hiccup) pages
someone. A `for` shorter than the `rate()` window adds little: the window already smooths that
long, so a blip still pages. Both are house policy (info). Not reported, because the advice
would be wrong there: event alerts (`increase(x[1d]) > 0`, `increase(x[15m]) >= 1`,
`rate(x[5m]) > 0`, `changes()`, `resets()`), where any `for` would stop them firing;
`absent()` alerts (the promql check covers those); conditions that already look back
(`avg_over_time`, `min_over_time`, `max_over_time`, `quantile_over_time`, ... or a
`rate()`/`increase()` window of 10m or more: one evaluation of it already averages 40 scrapes
at 15s, twice the usual `for: 5m`) need no `for`; windows of an hour or more are look-backs,
not smoothing, and are never compared with `for`; `irate()` smooths nothing, so its window
is not compared either.

Multi-window multi-burn-rate alerts (SRE workbook chapter 5, sloth, pyrra) are the
exception: the short window is the guard, and their shape is checked instead. A pair compares
the same error ratio over a long and a short window (about 12:1: 1h/5m, 6h/30m, 1d/2h, 3d/6h)
against the same burn-rate factor (14.4, 6, 3, 1) joined by `and`; pairs are joined by `or`.
Only real burn-rate alerts are judged so: every term compares an error ratio (a ratio of
`rate()`/`increase()`, or a recorded `*:burnrate*`, `*ratio_rate*`, `*error*ratio*`) with a
factor times the budget; other `and`-ed thresholds (`min_over_time(x[1h]) > y and
delta(x[10m]) > 0`) are left alone. Shape problems are warnings, each reported once per
rule: windows of a pair joined by `or`, a long window with no short one, a pair far from
12:1, the two sides of a pair with different factors, pairs joined by `and`, factors
inverted (the longer window burning at the higher factor).

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
# Recorded error ratios and burn rates: `slo:sli_error:ratio_rate5m`, `job:errors:ratio_rate1h`,
# `apiserver_request:burnrate1h`, `http_requests:burnrate5m` (pyrra), `..._error_ratio5m`.
_RATIO_NAME = re.compile(r"ratio_rate|error.*ratio|errors?:ratio|sli_error|burn_?rate")
_BURN_NAME = re.compile(r"burn_?rate")
_RATES = frozenset(("rate", "increase"))
_WRAPPING_AGGS = frozenset(("max", "min", "sum", "avg"))


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
# A rate()/increase() window of 10m already averages 40 scrapes at 15s, twice the usual
# `for: 5m`: one evaluation of it is a sustained condition, not a blip.
_SMOOTHED = 10 * 60.0
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
    """Windows of the rate()/increase() calls that feed a threshold (irate() reads only the
    last two samples of its window: it smooths nothing, so its window says nothing here)."""
    out = []
    for n in walk(root):
        if isinstance(n, Call) and n.func in _RATES and n.args:
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
    """`increase(x[1d]) > 0`, `increase(x[15m]) >= 1`, `rate(x[5m]) > 0`: something happened
    in the window, not a level that holds."""
    for n in walk(root):
        if not (isinstance(n, Bin) and n.op in (">", ">=") and isinstance(n.rhs, Num)):
            continue
        if n.rhs.value > 1:
            continue
        lhs = n.lhs
        while isinstance(lhs, Agg):
            lhs = lhs.expr
        if not isinstance(lhs, Call):
            continue
        if lhs.func in ("increase", "changes", "resets", "delta"):
            return True
        if lhs.func in ("rate", "irate") and n.op == ">" and n.rhs.value == 0:
            return True
    return False


def burn_rate_issues(root: Node) -> list[tuple[Severity, str, str]] | None:
    """None when `root` is not a multi-window burn-rate alert; else what is wrong with it."""
    if not (isinstance(root, Bin) and root.op in ("and", "or")):
        return None  # one comparison: not multi-window
    tree = _tree(root)
    if tree is None or isinstance(tree, Term):
        return None
    groups: list[list[Term]] = [_flatten(branch, "and") for branch in _flatten(tree, "or")]  # type: ignore[misc]
    if any(not isinstance(t, Term) for g in groups for t in g):
        return None
    terms = [t for g in groups for t in g]
    if len({t.window for t in terms}) < 2:
        return None
    # Only real burn-rate alerts: every term compares an error ratio against a factor
    # times the budget (`> 14.4 * 0.001`), or reads a recorded burn rate.
    if not all(t.ratio and (t.factor is not None or t.burn) for t in terms):
        return None
    issues: list[tuple[Severity, str, str]] = []
    singles: list[Term] = []
    pairs: list[tuple[float, float]] = []  # (factor, long window) of the well-formed pairs
    notes: list[tuple[Severity, str, str]] = []
    for group in groups:
        if len(group) == 1:
            singles.append(group[0])
            continue
        factors = sorted({t.factor for t in group if t.factor is not None})
        windows = sorted({t.window for t in group}, reverse=True)
        if len(factors) > 1:
            if len(group) == 2 and len(windows) == 2:
                by_window = {t.window: t.factor for t in group}
                issues.append(
                    (
                        SEVERITY,
                        f"the two windows of a burn-rate pair use different factors "
                        f"({by_window[windows[0]]:g} on {format_duration(windows[0])}, "
                        f"{by_window[windows[1]]:g} on {format_duration(windows[1])}): "
                        "the short window no longer confirms the long one",
                        "compare both windows of a pair with the same burn-rate factor",
                    )
                )
            else:
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
        if len(windows) != 2:
            continue
        long, short = windows
        ratio = long / short
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
        if factor is None:
            continue
        pairs.append((factor, long))
        expected = WORKBOOK.get(factor)
        if expected is not None and long != expected:
            notes.append(
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
    alone = sorted(next(iter(ws)) for ws in by_factor.values() if len(ws) == 1)
    if alone:
        shown = ", ".join(format_duration(w) for w in alone)
        issues.append(
            (
                SEVERITY,
                f"burn-rate condition over {shown} has no short window: it keeps paging long "
                "after the errors stop",
                f"pair each with `and` the same ratio over 1/12 of its window "
                f"(e.g. {format_duration(alone[0])}/{format_duration(alone[0] / 12)}) "
                "against the same factor",
            )
        )
    inverted = _inverted(pairs)
    if inverted:
        issues.append(
            (
                SEVERITY,
                f"burn-rate factors are inverted: the {format_duration(inverted[0][1])} pair "
                f"burns at {inverted[0][0]:g} but the {format_duration(inverted[1][1])} pair at "
                f"{inverted[1][0]:g}",
                "the longer the window, the lower the factor (14.4/1h, 6/6h, 3/1d, 1/3d)",
            )
        )
    else:
        issues.extend(notes)
    return list(dict.fromkeys(issues))  # one message per problem, however many pairs


def _inverted(
    pairs: list[tuple[float, float]],
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Two pairs where the longer window has the higher factor, if any."""
    ordered = sorted(pairs, key=lambda p: p[1])
    for i, (factor, window) in enumerate(ordered):
        for other_factor, other_window in ordered[i + 1 :]:
            if other_window > window and other_factor > factor:
                return (other_factor, other_window), (factor, window)
    return None


def _tree(node: Node) -> Term | tuple | None:
    if isinstance(node, Bin) and node.op in ("and", "or"):
        left, right = _tree(node.lhs), _tree(node.rhs)
        if left is None or right is None:
            return None
        return (node.op, left, right)
    while isinstance(node, Agg) and node.op in _WRAPPING_AGGS:
        node = node.expr  # sloth: max(ratio_rate5m > (14.4 * budget)) without (sloth_window)
    if isinstance(node, Bin) and node.op in (">", ">=") and not node.return_bool:
        windows = _windows(node.lhs)
        if windows is None or len(windows) != 1:
            return None
        names = [(n.name or "").lower() for n in walk(node.lhs) if isinstance(n, Sel)]
        burn = any(_BURN_NAME.search(name) for name in names if ":" in name)
        ratio = burn or _divides_rates(node.lhs)
        ratio = ratio or any(_RATIO_NAME.search(name) for name in names if ":" in name)
        return Term(windows.pop(), _factor(node.rhs), ratio, burn)
    return None


def _windows(lhs: Node) -> set[float] | None:
    """Windows of the rates on the left of a comparison: `rate(x[5m])`, `...:ratio_rate5m`."""
    windows = set()
    for n in walk(lhs):
        if isinstance(n, Call) and n.func in _RATES and n.args:
            arg = n.args[0]
            if isinstance(arg, Sel) and arg.range is not None:
                windows.add(arg.range)
        elif isinstance(n, Sel) and n.range is None and n.name and ":" in n.name:
            m = _NAME_WINDOW.search(n.name)
            if m:
                try:
                    windows.add(parse_duration(m.group(1)))
                except ValueError:
                    return None
    return windows


def _divides_rates(node: Node) -> bool:
    """`sum(rate(errors[w])) / sum(rate(requests[w]))`: a ratio of two rates."""
    for n in walk(node):
        if isinstance(n, Bin) and n.op == "/":
            sides = (n.lhs, n.rhs)
            if all(any(isinstance(c, Call) and c.func in _RATES for c in walk(s)) for s in sides):
                return True
    return False


def _factor(node: Node) -> float | None:
    for n in walk(node):
        if isinstance(n, Bin) and n.op == "*":
            for side in (n.lhs, n.rhs):
                if isinstance(side, Num) and side.value >= 1:
                    return side.value
    return None


def _flatten(tree: Term | tuple, op: str) -> list:
    if isinstance(tree, tuple) and tree[0] == op:
        return _flatten(tree[1], op) + _flatten(tree[2], op)
    return [tree]
