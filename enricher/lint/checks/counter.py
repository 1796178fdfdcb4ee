"""counter: a counter's raw value is compared or computed with, without rate() or increase().

Why: a counter only counts up from whenever the process started, and drops to zero on every
restart or redeploy. Its raw value says how long the process has been up as much as how often
the thing happened: `errors_total > 100` fires on a long-lived pod and stops after a restart,
and `sum(x_total)` falls whenever one instance restarts. Take `rate()`, `irate()` or
`increase()` of the counter first. Counters are known by name: `_total`, histogram `_bucket`
series, and `_count`/`_sum` of a histogram or summary (a unit such as `_seconds` or `_bytes`
before the suffix, a `_bucket` series of the same name read in the linted files, or rate()
taken of that name somewhere in them; gauges such as `pg_stat_activity_count` or
`kafka_consumergroup_lag_sum` are not counters). Only a raw value that is used is reported: in
a comparison, arithmetic, an aggregation other than count()/group(), or a function of the
value. Presence-only uses are fine: `absent(x_total)`, `count by (job) (x_total)`,
`timestamp(x_total)`, `x_total unless y`, the right side of `and`/`or`/`unless`, a guard
`x_count > 0 and ...` (anything counted at all), and any range function (`changes()`,
`*_over_time()`, subqueries) are not reported, nor `x_total - x_total offset 10m` (a
deliberate hand-made increase), nor recording rules (names with `:`, or recorded in the
linted files).

Bad:

    - alert: PodRestartingOften
      expr: kube_pod_container_status_restarts_total > 5

Good:

    - alert: PodRestartingOften
      expr: increase(kube_pod_container_status_restarts_total[1h]) > 5
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import SET_OPS, Agg, Bin, Call, Neg, Node, Num, Sel, Sub

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "counter"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_RATE_FUNCS = frozenset(("rate", "irate", "increase", "resets"))
# Functions whose result does not depend on the argument's values (absent: on its presence).
_PRESENCE_FUNCS = frozenset(("absent", "absent_over_time", "present_over_time", "timestamp"))
# Functions that pass series through without reading their values.
_PASS_FUNCS = frozenset(
    ("label_replace", "label_join", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc")
)
_PRESENCE_AGGS = frozenset(("count", "group", "count_values"))
_HISTOGRAM_BASE = re.compile(
    r"_(seconds|milliseconds|microseconds|nanoseconds|bytes|duration|latency|size)$"
)
_CACHE = "counter.evidence"


def check(rule: Rule, ctx: Context) -> list[Finding]:
    q = rule.query
    if q is None:
        return []
    raw: list[str] = []
    _visit(q.root, False, raw)
    out: list[Finding] = []
    for name in dict.fromkeys(raw):
        if ":" in name or ctx.recorded(name) or not _is_counter(name, ctx):
            continue
        window = "1h" if rule.is_alert else "5m"
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"`{name}` is a counter used without rate() or increase(): its raw value "
                "counts from the process start and drops to zero on every restart",
                f"use rate({name}[5m]) or increase({name}[{window}])",
                rule.expr_line,
            )
        )
    return out


def _visit(node: Node, used: bool, raw: list[str]) -> None:
    """Collect instant selectors whose value is `used` (compared, computed with, aggregated)."""
    if isinstance(node, Sel):
        if used and node.range is None and node.name:
            raw.append(node.name)
        return
    if isinstance(node, Sub):
        return  # a range function over a subquery: counted as a range, like `x[5m]`
    if isinstance(node, Call):
        if node.func in _PRESENCE_FUNCS or node.func in _RATE_FUNCS:
            return
        keep = used if node.func in _PASS_FUNCS else True
        for arg in node.args:
            _visit(arg, keep, raw)
        return
    if isinstance(node, Agg):
        if node.param is not None:
            _visit(node.param, True, raw)
        if node.op not in _PRESENCE_AGGS:
            _visit(node.expr, True, raw)
        return
    if isinstance(node, Bin):
        if node.op in SET_OPS:
            if not (node.op != "or" and _guard(node.lhs)):
                _visit(node.lhs, used, raw)
            return  # the right side only filters (or fills in) series
        if node.op == "-" and _same_counter(node.lhs, node.rhs):
            return  # `x - x offset 10m`: a hand-made increase(), deliberate
        _visit(node.lhs, True, raw)
        _visit(node.rhs, True, raw)
        return
    if isinstance(node, Neg):
        _visit(node.expr, True, raw)


def _guard(node: Node) -> bool:
    """`x_count > 0` (or `== 0`, `!= 0`) before `and`/`unless`: whether anything was counted."""
    return (
        isinstance(node, Bin)
        and node.op in (">", "==", "!=")
        and not node.return_bool
        and isinstance(node.lhs, Sel)
        and isinstance(node.rhs, Num)
        and node.rhs.value == 0
    )


def _same_counter(lhs: Node, rhs: Node) -> bool:
    return isinstance(lhs, Sel) and isinstance(rhs, Sel) and lhs.name == rhs.name


def _is_counter(name: str, ctx: Context) -> bool:
    if name.endswith(("_total", "_bucket")):
        return True
    for suffix in ("_count", "_sum"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if _HISTOGRAM_BASE.search(base):
                return True
            rated, names = _evidence(ctx)
            return name in rated or f"{base}_bucket" in names
    return False


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_RATED = re.compile(r"\b(?:rate|irate|increase|resets)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _evidence(ctx: Context) -> tuple[set[str], set[str]]:
    """Names some linted rule takes rate() of, and every name the linted rules mention.

    Read from the expressions' text, not their parsed trees: this runs over every rule of the
    run, and a lazy run parses only the rules it checks. A name inside a string literal may
    count as read; that only ever makes a `_count`/`_sum` look like a counter's part, as the
    `_bucket` beside it says it is.
    """
    got = ctx.cache.get(_CACHE)
    if got is None:
        text = "\n".join(r.expr for r in ctx.rules if r.expr)
        rated = set(_RATED.findall(text))
        names = set(_NAME.findall(text))
        got = ctx.cache[_CACHE] = (rated, names)
    return got
