"""impossible: a comparison that no value the query can produce satisfies.

Why: a condition that is never true evaluates without an error and never fires, so the rule
looks like coverage and is none (pint's promql/impossible). The values some expressions can
take are known: `count()` and `count_over_time()` are at least 1, because nothing to count gives
no result, not 0 (`count(up{job="api"}) == 0` never fires; that is what `absent()` is for);
`absent()`, `present_over_time()` and `group()` are 1; `rate()`, `irate()`, `increase()`,
`changes()` and `resets()` are never negative; `up` is 0 or 1; `vector(1)` is 1; a `bool`
comparison is 0 or 1; and a comparison keeps only the values it let through, so a second one
can contradict it (`x == 0 > 0`, `x > 5 < 3`). Comparing with NaN is never true either.
Only these facts are used: an expression whose values are not known is never reported.

Bad:

    - alert: PaymentsApiDown
      expr: count(up{job="payments-api"} == 1) == 0
      for: 5m

Good:

    - alert: PaymentsApiDown
      expr: absent(up{job="payments-api"} == 1)
      for: 5m
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import COMPARISONS, Agg, Bin, Call, Neg, Node, Num, Sel, children

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "impossible"
SEVERITY = Severity.ERROR
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_INF = math.inf
_MAX_DEPTH = 200
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
_COUNT_HINT = (
    "nothing to count returns no series, not 0: alert on absent(...), "
    "or compare `(count(...) or vector(0))`"
)
_HINT = "check the threshold and the direction of the comparison"


class Span(NamedTuple):
    """The values an expression's series can have: an interval, and why it is known."""

    lo: float
    lo_in: bool
    hi: float
    hi_in: bool
    why: str = ""
    hint: str = _HINT

    def has(self, c: float) -> bool:
        return (c > self.lo or (c == self.lo and self.lo_in)) and (
            c < self.hi or (c == self.hi and self.hi_in)
        )

    def hull(self, other: Span) -> Span:
        lo, lo_out = min((self.lo, not self.lo_in), (other.lo, not other.lo_in))
        hi, hi_in = max((self.hi, self.hi_in), (other.hi, other.hi_in))
        why = " and ".join(dict.fromkeys(w for w in (self.why, other.why) if w))
        return Span(lo, not lo_out, hi, hi_in, why, self.hint)


ANY = Span(-_INF, True, _INF, True)  # unknown values (NaN too)


def _fixed(lo: float, hi: float, why: str, hint: str = _HINT) -> Span:
    return Span(lo, True, hi, True, why, hint)


_CALLS = {
    "absent": _fixed(1, 1, "absent() returns 1 or nothing"),
    "absent_over_time": _fixed(1, 1, "absent_over_time() returns 1 or nothing"),
    "present_over_time": _fixed(1, 1, "present_over_time() returns 1 or nothing"),
    "count_over_time": _fixed(
        1, _INF, "count_over_time() is at least 1 (no samples gives no result)", _COUNT_HINT
    ),
    **{
        f: _fixed(0, _INF, f"{f}() is never negative")
        for f in ("rate", "irate", "increase", "changes", "resets")
    },
}
_PASS_CALLS = frozenset(
    ("sort", "sort_desc", "label_replace", "label_join", "last_over_time", "max_over_time",
     "min_over_time", "avg_over_time")
)  # fmt: skip
_PASS_AGGS = frozenset(("min", "max", "avg", "topk", "bottomk", "limitk", "limit_ratio"))
_COUNT = _fixed(1, _INF, "count() is at least 1 (nothing to count gives no result)", _COUNT_HINT)
_AGGS = {
    "count": _COUNT,
    "count_values": _COUNT._replace(why="count_values() counts are at least 1"),
    "group": _fixed(1, 1, "group() is always 1"),
}


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if rule.query is None:
        return []
    found: dict[str, str] = {}
    result = _Eval(found).span(rule.query.root, 0)
    if result is None and found:
        last = next(reversed(found))
        never = "the alert never fires" if rule.is_alert else "the rule records nothing"
        found[f"{last}, so {never}"] = found.pop(last)
    return [rule.finding(ID, SEVERITY, msg, hint, rule.expr_line) for msg, hint in found.items()]


def _fmt(c: float) -> str:
    if math.isnan(c):
        return "NaN"
    if math.isinf(c):
        return "+Inf" if c > 0 else "-Inf"
    return str(int(c)) if c.is_integer() else repr(c)


def _number(node: Node) -> float | None:
    if isinstance(node, Neg) and isinstance(node.expr, Num):
        return -node.expr.value
    return node.value if isinstance(node, Num) else None


def _meet(s: Span, op: str, c: float) -> Span | None:
    """The part of `s` that `value op c` lets through; None when nothing is."""
    if math.isnan(c):
        return s if op == "!=" else None
    lo, lo_in, hi, hi_in = s.lo, s.lo_in, s.hi, s.hi_in
    if op == "==":
        if not s.has(c):
            return None
        return s if s.lo == s.hi else Span(c, True, c, True, s.why, s.hint)
    if op == "!=":
        return None if lo == hi == c else s
    if op == ">" and c >= lo:
        lo, lo_in = c, False
    elif op == ">=" and c > lo:
        lo, lo_in = c, True
    elif op == "<" and c <= hi:
        hi, hi_in = c, False
    elif op == "<=" and c < hi:
        hi, hi_in = c, True
    if lo > hi or (lo == hi and not (lo_in and hi_in)):
        return None
    if (lo, lo_in, hi, hi_in) == s[:4]:
        return s
    return Span(lo, lo_in, hi, hi_in, s.why, s.hint)


class _Eval:
    """Computes each node's Span (None: never any series), noting impossible comparisons."""

    def __init__(self, found: dict[str, str]) -> None:
        self.found = found

    def span(self, node: Node, depth: int) -> Span | None:
        if depth > _MAX_DEPTH:
            return ANY
        d = depth + 1
        if isinstance(node, Sel):
            if node.name == "up":
                return _fixed(0, 1, "`up` is 1 or 0")
            return ANY
        if isinstance(node, Bin):
            return self.binary(node, d)
        if isinstance(node, Call):
            args = [self.span(a, d) for a in node.args]
            if node.func in _CALLS:
                return _CALLS[node.func]
            if node.func == "vector" and node.args and (c := _number(node.args[0])) is not None:
                return _fixed(c, c, f"vector({_fmt(c)}) is always {_fmt(c)}")
            if node.func in _PASS_CALLS and args:
                return args[0]
            return ANY
        if isinstance(node, Agg):
            if node.param is not None:
                self.span(node.param, d)
            inner = self.span(node.expr, d)
            if inner is None:
                return None
            if node.op in _AGGS:
                return _AGGS[node.op]
            if node.op in _PASS_AGGS:
                return inner
            if node.op == "sum" and inner.lo >= 0:
                return Span(inner.lo, inner.lo_in, _INF, True, inner.why, inner.hint)
            return ANY
        for child in children(node):
            self.span(child, d)
        return ANY

    def binary(self, node: Bin, d: int) -> Span | None:
        left, right = self.span(node.lhs, d), self.span(node.rhs, d)
        if node.op == "or":
            if left is None or right is None:
                return left or right
            return left.hull(right)
        if node.op in ("and", "unless"):
            return None if left is None or (node.op == "and" and right is None) else left
        if node.op not in COMPARISONS:
            return ANY
        if node.return_bool:
            return _fixed(0, 1, "a `bool` comparison returns 0 or 1")
        lc, rc = _number(node.lhs), _number(node.rhs)
        if lc is None and rc is None:
            return left  # vector to vector: the left side's values, filtered
        if lc is not None and rc is not None:
            return ANY  # scalar to scalar needs `bool`: not a filter
        side, op, c = (right, _FLIP[node.op], lc) if lc is not None else (left, node.op, rc)
        assert c is not None
        if side is None:
            return None
        met = _meet(side, op, c)
        shown = f"`{_fmt(c)} {node.op} ...`" if lc is not None else f"`... {node.op} {_fmt(c)}`"
        if met is None:
            why = "comparing with NaN is never true" if math.isnan(c) else side.why
            if not why:
                why = f"no value is {op} {_fmt(c)}"
            self.found.setdefault(f"{shown} can never be true: {why}", side.hint)
            return None
        if met is side:
            return side
        return met._replace(why=f"the comparison {shown} before it lets only values {op} "
                            f"{_fmt(c)} through")  # fmt: skip
