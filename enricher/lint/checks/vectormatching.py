"""vectormatching: both sides of a binary operation must be able to match.

Why: between two vectors, `/`, `>`, `and` and the other operators pair the series whose labels
agree (all labels but the metric name, only the `on(...)` ones, or all but the `ignoring(...)`
ones), and a series without a partner is dropped. When one side certainly carries a label the
other side certainly cannot have (`sum by (job) (...)` cannot have `instance`; a `by (job)`
side never matches a `by (instance)` side; `{env="prod"}` never matches `sum(...)`), or both
sides pin a label to different values (`{job="a"}` against `{job="b"}`), no series ever pairs
up: the query returns nothing, without an error, and the alert can never fire (pint's
promql/vector_matching). Of a side whose labels the query does not fix (a raw selector,
`rate(x[5m])`) only one thing is known: Prometheus gives every scraped series a `job`, so
`sum(x) / y` never matches (recording rules, `a:b:c` or recorded in the linted files, and
ALERTS are not assumed to have one; `instance` is not assumed either, Pushgateway series
lack it). `or` and `unless` are not checked, since they keep their left side either way.

Bad:

    - alert: CheckoutHighErrorRate
      expr: |
        sum by (service) (rate(http_requests_total{status=~"5.."}[5m]))
        / on (instance)
        sum by (instance) (rate(http_requests_total[5m])) > 0.05

Good:

    - alert: CheckoutHighErrorRate
      expr: |
        sum by (service) (rate(http_requests_total{status=~"5.."}[5m]))
        / on (service)
        sum by (service) (rate(http_requests_total[5m])) > 0.05
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import (
    Agg,
    Bin,
    Call,
    Labels,
    Neg,
    Node,
    Query,
    Sel,
    Str,
    Sub,
    walk,
)

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "vectormatching"
SEVERITY = Severity.ERROR
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

# Functions that keep every label of their argument (and so its `label="value"` pins).
_KEEP_LABELS = frozenset(
    ("rate", "irate", "increase", "delta", "idelta", "deriv", "abs", "ceil", "floor", "round",
     "clamp", "clamp_min", "clamp_max", "avg_over_time", "min_over_time", "max_over_time",
     "sum_over_time", "last_over_time", "count_over_time", "quantile_over_time", "sort",
     "sort_desc", "timestamp")
)  # fmt: skip


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if rule.query is None:
        return []
    out: list[Finding] = []
    for node in walk(rule.query.root):
        if not isinstance(node, Bin) or node.op in ("or", "unless"):
            continue
        if _scalar(node.lhs) or _scalar(node.rhs):
            continue
        problem = _never_matches(node, ctx, rule.query)
        if problem:
            msg = f"{problem}: no series pair up, so `{node.op}` returns nothing"
            hint = "match on labels both sides keep: add them to both by(...) clauses or on(...)"
            out.append(rule.finding(ID, SEVERITY, msg, hint, rule.expr_line))
    return out


def _never_matches(node: Bin, ctx: Context, query: Query) -> str | None:
    left, right = query.labels_of(node.lhs), query.labels_of(node.rhs)
    if node.on is not None:
        compared: frozenset[str] | None = frozenset(node.on)
        ignored: frozenset[str] = frozenset()
        how, note = f"`on({', '.join(node.on)})`: ", ""
    else:
        compared = None
        ignored = frozenset(node.ignoring or ()) | {"__name__"}
        how = f"`ignoring({', '.join(node.ignoring)})`: " if node.ignoring else ""
        note = "" if node.ignoring else " (without on(), every label must match)"
    for has, lacks, has_side, lacks_side, has_node in (
        (left, right, "left", "right", node.lhs),
        (right, left, "right", "left", node.rhs),
    ):
        certain = has.certain - _relabelled(has_node)
        scraped = "job" not in certain and _scraped(has_node, ctx)
        for label in [*sorted(certain), "job"] if scraped else sorted(certain):
            if label in ignored or (compared is not None and label not in compared):
                continue
            if not lacks.may_have(label):
                why = (
                    "reads scraped series, which always carry `job`,"
                    if scraped and label == "job"
                    else f"always has `{label}`"
                )
                return (
                    f"{how}the {has_side} side {why} but the "
                    f"{lacks_side} side {_lacks(lacks, label)}{note}"
                )
    for label, lv in sorted(_pins(node.lhs).items()):
        if label in ignored or (compared is not None and label not in compared):
            continue
        rv = _pins(node.rhs).get(label)
        if rv is not None and rv != lv:
            return f'{how}the left side has {label}="{lv}" and the right side {label}="{rv}"'
    return None


def _lacks(labels: Labels, label: str) -> str:
    if labels.only is None:
        return f"drops `{label}`"
    if not labels.only:
        return "has no labels"
    return "can only have " + ", ".join(f"`{x}`" for x in sorted(labels.only))


def _relabelled(node: Node) -> frozenset[str]:
    """Labels label_replace()/label_join() write: not certain (no regex match, empty value)."""
    return frozenset(
        n.args[1].value
        for n in walk(node)
        if isinstance(n, Call)
        and n.func in ("label_replace", "label_join")
        and len(n.args) > 1
        and isinstance(n.args[1], Str)
    )


def _pins(node: Node) -> dict[str, str]:
    """Labels every series of `node` carries with a known value (`{job="api"}`)."""
    if isinstance(node, Sel):
        return {m.name: m.value for m in node.matchers if m.op == "=" and m.name != "__name__"}
    if isinstance(node, Sub):
        return _pins(node.expr)
    if isinstance(node, Call) and node.func in _KEEP_LABELS:
        arg = next((a for a in node.args if not _scalar(a)), None)
        return {} if arg is None else _pins(arg)
    if isinstance(node, Agg):
        if node.op in ("topk", "bottomk"):
            return _pins(node.expr)
        pins = _pins(node.expr)
        if node.by is not None:
            return {k: v for k, v in pins.items() if k in node.by}
        if node.without is not None:
            return {k: v for k, v in pins.items() if k not in node.without}
    return {}


def _scraped(node: Node, ctx: Context) -> bool:
    """Whether `node` returns scraped series with their target labels: Prometheus gives every
    scraped series a `job`. Recording rules (`a:b:c`, or recorded in the linted files) and
    ALERTS need not have one."""
    while True:
        if isinstance(node, Sel):
            name = node.name
            if name is None or ":" in name or name.startswith("ALERTS"):
                return False
            return not ctx.recorded(name)
        if isinstance(node, Neg | Sub):
            node = node.expr
        elif isinstance(node, Call) and node.func in _KEEP_LABELS:
            arg = next((a for a in node.args if not _scalar(a)), None)
            if arg is None:
                return False
            node = arg
        elif isinstance(node, Agg) and (
            node.op in ("topk", "bottomk") or "job" not in (node.without or ("job",))
        ):
            node = node.expr
        elif isinstance(node, Bin):
            if node.op == "or":
                return _scraped(node.lhs, ctx) and _scraped(node.rhs, ctx)
            kept = "job" in node.on if node.on is not None else "job" not in (node.ignoring or ())
            if not kept and node.card == "one-to-one" and node.op not in ("and", "unless"):
                return False
            node = node.rhs if node.card == "one-to-many" or _scalar(node.lhs) else node.lhs
        else:
            return False


def _scalar(node: Node) -> bool:
    """Whether `node` is a number or scalar, which matches every series."""
    while isinstance(node, Neg | Sub):
        node = node.expr
    if isinstance(node, Bin):
        return _scalar(node.lhs) and _scalar(node.rhs)
    if isinstance(node, Call):
        return node.returns != "vector"
    return not isinstance(node, Sel | Agg)
