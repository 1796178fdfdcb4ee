"""promql: queries that parse but do not mean what their author meant.

Why: each of these evaluates without an error and silently alerts wrong:

- `rate()`/`irate()`/`increase()` over a series that is not a counter (a gauge by naming
  convention: `_ratio`, `_percent`, `_info`, `_timestamp_seconds`, `up`; or a recording rule
  that already records a rate or ratio): the result is noise;
- `rate(sum(...)[5m:])`: a counter reset in one series looks like a drop in the sum; aggregate
  after `rate()`;
- a `rate()` range shorter than twice the scrape interval: one sample in the window, no result;
- `histogram_quantile()` over `_bucket` series aggregated without `le`: the buckets are summed
  away and the quantile is NaN;
- an alert with no comparison (`expr: up`, or `x > bool 1`): it fires for every series, forever;
- `absent()` without `for`: it pages on one missed scrape or a restart.

Bad:

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99, sum by (service) (
          rate(http_request_duration_seconds_bucket[20s])))

Good:

    - alert: CheckoutHighLatency
      expr: |
        histogram_quantile(0.99, sum by (le, service) (
          rate(http_request_duration_seconds_bucket[5m]))) > 0.5
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.durations import format_duration
from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import (
    COMPARISONS,
    COUNTER_FUNCS,
    Agg,
    Bin,
    Call,
    Neg,
    Node,
    Sel,
    Sub,
    unwrap,
    walk,
)

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "promql"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_GAUGE_NAME = re.compile(
    r"(_ratio|_percent|_percentage|_celsius|_info|_timestamp|_timestamp_seconds|_temperature"
    r"|_gauge)$|^up$"
)
# The operation part of a recording rule name that already is a rate or ratio: `rate5m`,
# `ratio`, `ratio_rate1h`, `irate1m` (Prometheus' level:metric:operations naming).
_RECORDED_RATE = re.compile(r"(?:i?rate|ratio|increase)(?:_?\d+[smhdw]|_|$)")
_RANGE_FUNCS = COUNTER_FUNCS | {"delta", "idelta", "deriv"}
_RATE_LIKE = frozenset(
    ("rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile")
)
_ALWAYS_FILTERED = frozenset(("ALERTS", "ALERTS_FOR_STATE"))


def check(rule: Rule, ctx: Context) -> list[Finding]:
    q = rule.query
    if q is None:
        return []
    out: list[Finding] = []
    line = rule.expr_line
    min_range = 2 * ctx.config.scrape_interval
    for call in q.calls:
        arg = call.args[0] if call.args else None
        if call.func in COUNTER_FUNCS and isinstance(arg, Sel):
            out.extend(_not_a_counter(rule, call.func, arg, ctx))
        if call.func in COUNTER_FUNCS and isinstance(arg, Sub):
            inner = unwrap(arg.expr)
            if isinstance(inner, Agg):
                out.append(
                    rule.finding(
                        ID,
                        Severity.ERROR,
                        f"{call.func}() over an aggregated subquery ({inner.op}(...)[...:]): "
                        "a counter reset in one series reads as a drop of the whole sum",
                        f"take {call.func}() of each series first: "
                        f"{inner.op}({call.func}(counter[5m]))",
                        line,
                    )
                )
        if (
            call.func in _RANGE_FUNCS
            and isinstance(arg, Sel)
            and arg.range is not None
            and arg.range < min_range
        ):
            out.append(
                rule.finding(
                    ID,
                    SEVERITY,
                    f"{call.func}({arg.text()}[{format_duration(arg.range)}]) covers less than "
                    f"two scrapes (scrape interval {format_duration(ctx.config.scrape_interval)})",
                    f"use a range of at least {format_duration(min_range)}; "
                    "4x the scrape interval survives a missed scrape",
                    line,
                )
            )
        if call.func == "histogram_quantile" and len(call.args) == 2:
            out.extend(_quantile_without_le(rule, call.args[1]))
    if rule.is_alert:
        out.extend(_comparison(rule, ctx))
        if "absent" in q.functions() and not rule.for_seconds:
            out.append(
                rule.finding(
                    ID,
                    SEVERITY,
                    "absent() alert without `for`: one missed scrape or a restart pages",
                    "add for: (a few scrape intervals, e.g. 5m)",
                    rule.keys.get("expr"),
                )
            )
    return out


def _not_a_counter(rule: Rule, func: str, sel: Sel, ctx: Context) -> list[Finding]:
    name = sel.name
    if not name:
        return []
    sources = ctx.sources(sel) or ctx.recorded(name)
    if sources:
        rated = next(
            (fs for s in sources if s.query and (fs := s.query.functions() & _RATE_LIKE)), None
        )
        if rated:
            return [
                rule.finding(
                    ID,
                    SEVERITY,
                    f"{func}() over `{name}`, a recording rule that already records "
                    f"{', '.join(sorted(rated))}()",
                    "use the recorded value directly, or record the raw counter",
                    rule.expr_line,
                )
            ]
    if ":" in name:
        op = name.rsplit(":", 1)[1]
        if not _RECORDED_RATE.match(op):
            return []
        return [
            rule.finding(
                ID,
                SEVERITY,
                f"{func}() over `{name}`, a recorded {op.rstrip('0123456789smhdw')} by its "
                f"name (level:metric:operation); {func}() is for counters",
                "use the recorded value directly, or record the raw counter",
                rule.expr_line,
            )
        ]
    if not _GAUGE_NAME.search(name):
        return []
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"{func}() over `{name}`, which is a gauge by its name; {func}() is for counters",
            "use deriv() or delta() for gauges, or compare the gauge's value directly",
            rule.expr_line,
        )
    ]


def _quantile_without_le(rule: Rule, arg: Node) -> list[Finding]:
    inner = unwrap(arg)
    if not isinstance(inner, Agg):
        return []
    if not any(isinstance(n, Sel) and n.name and "_bucket" in n.name for n in walk(inner)):
        return []  # native histograms have no `le`
    if inner.by is not None and "le" in inner.by:
        return []
    if inner.without is not None and "le" not in inner.without:
        return []
    if inner.op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return []
    return [
        rule.finding(
            ID,
            Severity.ERROR,
            f"histogram_quantile() over {inner.op}(...) that drops the `le` label: "
            "the buckets are summed together and the result is NaN",
            "keep le in the aggregation: sum by (le, service) (rate(..._bucket[5m]))",
            rule.expr_line,
        )
    ]


def _comparison(rule: Rule, ctx: Context) -> list[Finding]:
    assert rule.query is not None
    root = rule.query.root
    if not rule.query.selectors:
        return []  # `vector(1)`: a deliberate always-firing heartbeat (Watchdog)
    if _filters(root, ctx, set()):
        return []
    top = unwrap(root)
    if isinstance(top, Bin) and top.op in COMPARISONS and top.return_bool:
        msg = f"`{top.op} bool` returns 0 or 1 for every series, so the alert always fires"
    else:
        msg = "alert expression has no comparison: it fires for every series it returns"
    return [
        rule.finding(
            ID,
            SEVERITY,
            msg,
            "compare against a threshold, e.g. `... > 0.05`",
            rule.expr_line,
        )
    ]


def _filters(node: Node, ctx: Context, seen: set[str]) -> bool:
    """Whether `node` can return nothing (a comparison, absent(), `and`, ...)."""
    if isinstance(node, Bin):
        if node.op in COMPARISONS:
            return (
                not node.return_bool
                or _filters(node.lhs, ctx, seen)
                or _filters(node.rhs, ctx, seen)
            )
        if node.op in ("and", "unless"):
            return True
        if node.op == "or":
            return _filters(node.lhs, ctx, seen) and _filters(node.rhs, ctx, seen)
        return _filters(node.lhs, ctx, seen) or _filters(node.rhs, ctx, seen)
    if isinstance(node, Call):
        if node.func in ("absent", "absent_over_time"):
            return True
        return any(_filters(a, ctx, seen) for a in node.args)
    if isinstance(node, Agg):
        return _filters(node.expr, ctx, seen)
    if isinstance(node, Sub | Neg):
        return _filters(node.expr, ctx, seen)
    if isinstance(node, Sel):
        name = node.name
        if name is None or name in _ALWAYS_FILTERED:
            return True
        sources = ctx.sources(node) or ctx.recorded(name)
        if sources:
            if name in seen:
                return True
            seen.add(name)
            return any(s.query is not None and _filters(s.query.root, ctx, seen) for s in sources)
        return ":" in name  # a recording rule defined elsewhere may compare: do not guess
    return False
