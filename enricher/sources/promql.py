"""From an alert to the series behind it: expression, selectors, kind and error matcher.

Why this shape: exemplars hang off raw series (counters and histogram buckets), not off the
alert's aggregated expression. So we find the expression (the alert's own generatorURL, or
the Prometheus rule of that name), parse it, and keep the selectors worth asking exemplars
for: the numerator of an error ratio (its series are the failing requests), the `_bucket`
selector of a latency quantile (its exemplars carry the slow requests' trace ids).

The generatorURL is alert content and therefore untrusted: only its query string is read.
Its host is never contacted.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import promql_parser as pp
from pydantic import BaseModel, ConfigDict, Field

AlertKind = Literal["error_ratio", "latency", "other"]
MatchOpText = Literal["=", "!=", "=~", "!~"]

_OPS: dict[str, MatchOpText] = {
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}
# Label names that usually hold an outcome; used only when a ratio does not tell us itself.
_OUTCOME_LABELS = (
    "status",
    "code",
    "status_code",
    "http_status",
    "http_status_code",
    "http_response_status_code",
    "response_code",
    "grpc_code",
    "grpc_status",
    "outcome",
    "result",
    "error",
)
_ERRORISH_VALUE = re.compile(
    r"^(5|4|\^?\(?5|\[45\]|error|err|fail|failure|internal|unavailable|deadline|true)", re.I
)
_ERRORISH_NAME = re.compile(r"(error|fail|fault|5xx|exception|panic)", re.I)
_DURATIONISH_NAME = re.compile(r"(duration|latency|_seconds|_milliseconds|_ms$|response_time)")
_COMPARISONS = {">", ">=", "<", "<=", "==", "!="}


class PromQLError(ValueError):
    """The expression could not be parsed or holds nothing to ask exemplars for."""


class LabelMatcher(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    op: MatchOpText
    value: str

    def render(self) -> str:
        v = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{v}"'

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Evaluate like Prometheus: a missing label is the empty string; regexes are anchored."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        try:
            hit = re.fullmatch(self.value, actual) is not None
        except re.error:
            return False
        return hit if self.op == "=~" else not hit


class Selector(BaseModel):
    """One vector selector, rendered without offset/@ because exemplars are looked up by time."""

    model_config = ConfigDict(frozen=True)

    metric: str | None = None
    matchers: tuple[LabelMatcher, ...] = ()

    def render(self) -> str:
        inner = ",".join(m.render() for m in self.matchers)
        if self.metric:
            return f"{self.metric}{{{inner}}}" if inner else self.metric
        return f"{{{inner}}}"

    def with_matchers(self, extra: Iterable[LabelMatcher]) -> Selector:
        have = {(m.name, m.op, m.value) for m in self.matchers}
        add = tuple(m for m in extra if (m.name, m.op, m.value) not in have)
        return Selector(metric=self.metric, matchers=self.matchers + add)

    def without(self, matcher: LabelMatcher | None) -> Selector:
        if matcher is None:
            return self
        return Selector(
            metric=self.metric, matchers=tuple(m for m in self.matchers if m != matcher)
        )

    def label_names(self) -> set[str]:
        return {m.name for m in self.matchers}


class AlertQuery(BaseModel):
    """Everything the evidence chain needs to know about the alert's expression, computed once."""

    expr: str
    source: Literal["generatorURL", "rules"]
    kind: AlertKind
    selectors: list[Selector]
    # What to ask exemplars for: the failing / slow series, narrowed to this alert.
    primary: Selector
    # What to ask for healthy contrast (denominator without the error matcher); None = primary.
    healthy: Selector | None = None
    error_matcher: LabelMatcher | None = None
    threshold: float | None = None
    comparison: str | None = None
    # Alert labels added to the selectors (labels that survive the aggregation).
    narrowed_with: dict[str, str] = Field(default_factory=dict)
    # Alert labels to apply to returned series that carry them (labels we cannot prove exist).
    series_filter: dict[str, str] = Field(default_factory=dict)

    @property
    def threshold_seconds(self) -> float | None:
        """The comparison threshold as seconds, for latency alerts on a duration metric."""
        if self.threshold is None or self.kind != "latency":
            return None
        name = self.primary.metric or ""
        if "millisecond" in name or name.endswith("_ms") or "_ms_" in name:
            return self.threshold / 1000.0
        return self.threshold


@functools.lru_cache(maxsize=4096)
def expr_from_generator_url(url: str) -> str | None:
    """The `g0.expr` query parameter of a Prometheus generatorURL; the URL is never fetched."""
    if not url:
        return None
    try:
        q = parse_qs(urlparse(url).query)
    except ValueError:
        return None
    vals = q.get("g0.expr") or []
    expr = vals[0].strip() if vals else ""
    return expr or None


class RuleInfo(BaseModel):
    """An alerting rule from /api/v1/rules, reduced to what matching needs."""

    name: str
    query: str
    labels: dict[str, str] = Field(default_factory=dict)
    alert_label_sets: list[dict[str, str]] = Field(default_factory=list)
    group: str = ""


def match_rule(rules: Iterable[RuleInfo], alert_labels: Mapping[str, str]) -> RuleInfo | None:
    """The rule that produced this alert: same name, its static labels on the alert, and,
    when the rule lists its active alerts, one whose label set equals the alert's."""
    name = alert_labels.get("alertname", "")
    candidates = [
        r
        for r in rules
        if r.name == name and all(alert_labels.get(k) == v for k, v in r.labels.items())
    ]
    if not candidates:
        return None
    for r in candidates:
        if any(dict(s) == dict(alert_labels) for s in r.alert_label_sets):
            return r
    for r in candidates:
        if any(all(alert_labels.get(k) == v for k, v in s.items()) for s in r.alert_label_sets):
            return r
    return candidates[0]


# --- AST walking --------------------------------------------------------------------------


class _Found(BaseModel):
    """A selector with the context it was found in."""

    selector: Selector
    # Labels known to survive to the alert: `by` labels of the enclosing aggregations;
    # None means every label survives (no aggregation, or `without`).
    surviving: frozenset[str] | None
    side: Literal["lhs", "rhs", "none"] = "none"
    in_quantile: bool = False


def _selector_of(vs: Any) -> Selector:
    matchers = []
    for m in vs.matchers.matchers:
        op = _OPS.get(str(m.op), "=")
        if m.name == "__name__" and op == "=" and not vs.name:
            continue
        matchers.append(LabelMatcher(name=m.name, op=op, value=m.value))
    name = vs.name
    if not name:
        for m in vs.matchers.matchers:
            if m.name == "__name__" and str(m.op) == "MatchOp.Equal":
                name = m.value
    return Selector(metric=name or None, matchers=tuple(matchers))


def _collect(expr: Any) -> list[_Found]:
    """Depth-first with an explicit stack: selectors with their aggregation context."""
    out: list[_Found] = []
    # (node, surviving labels, side of the top ratio, inside histogram_quantile)
    stack: list[tuple[Any, frozenset[str] | None, str, bool]] = [(expr, None, "none", False)]
    while stack:
        node, surviving, side, inq = stack.pop()
        if isinstance(node, pp.VectorSelector):
            out.append(
                _Found(
                    selector=_selector_of(node),
                    surviving=surviving,
                    side=side,  # type: ignore[arg-type]
                    in_quantile=inq,
                )
            )
        elif isinstance(node, pp.MatrixSelector):
            stack.append((node.vector_selector, surviving, side, inq))
        elif isinstance(node, pp.AggregateExpr):
            mod = node.modifier
            inner = surviving
            if mod is not None and str(mod.type) == "AggModifierType.By":
                labels = frozenset(mod.labels)
                inner = labels if surviving is None else (surviving & labels)
            elif mod is None:
                inner = frozenset()
            # `without` keeps the outer knowledge: we cannot tell which labels remain.
            stack.append((node.expr, inner, side, inq))
        elif isinstance(node, pp.Call):
            q = node.func.name == "histogram_quantile"
            for a in reversed(list(node.args)):
                if isinstance(a, pp.Expr):
                    stack.append((a, surviving, side, inq or q))
        elif isinstance(node, pp.BinaryExpr):
            stack.append((node.rhs, surviving, side, inq))
            stack.append((node.lhs, surviving, side, inq))
        elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
            stack.append((node.expr, surviving, side, inq))
    return out


def _strip_comparison(expr: Any) -> tuple[Any, str | None, float | None]:
    """`X > 0.05` -> (X, '>', 0.05); parentheses are looked through."""
    node = expr
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    if isinstance(node, pp.BinaryExpr) and str(node.op) in _COMPARISONS:
        if isinstance(node.rhs, pp.NumberLiteral):
            return node.lhs, str(node.op), float(node.rhs.val)
        if isinstance(node.lhs, pp.NumberLiteral):
            return node.rhs, str(node.op), float(node.lhs.val)
        return node.lhs, str(node.op), None
    return node, None, None


def _find_ratio(expr: Any) -> Any | None:
    stack = [expr]
    while stack:
        node = stack.pop()
        while isinstance(node, pp.ParenExpr):
            node = node.expr
        if isinstance(node, pp.BinaryExpr):
            if str(node.op) == "/":
                return node
            stack.extend([node.rhs, node.lhs])
        elif isinstance(node, pp.AggregateExpr | pp.UnaryExpr):
            stack.append(node.expr)
        elif isinstance(node, pp.Call):
            stack.extend(a for a in node.args if isinstance(a, pp.Expr))
    return None


def _heuristic_error_matcher(sel: Selector) -> LabelMatcher | None:
    for m in sel.matchers:
        if (
            m.name.lower() in _OUTCOME_LABELS
            and m.op in ("=", "=~")
            and _ERRORISH_VALUE.match(m.value)
        ):
            return m
    return None


class _Structure:
    """What an expression says regardless of the alert: parsed once per expression."""

    __slots__ = (
        "comparison",
        "error_matcher",
        "found",
        "have",
        "healthy",
        "kind",
        "primary",
        "threshold",
    )

    def __init__(
        self,
        found: list[_Found],
        kind: AlertKind,
        primary: _Found,
        healthy: Selector | None,
        error_matcher: LabelMatcher | None,
        threshold: float | None,
        comparison: str | None,
    ) -> None:
        self.found = found
        self.kind = kind
        self.primary = primary
        self.healthy = healthy
        self.error_matcher = error_matcher
        self.threshold = threshold
        self.comparison = comparison
        self.have = primary.selector.label_names()


# Every alert of a storm carries the same expression (and, narrowed, usually the same
# labels): parsing and building the AlertQuery is done once per distinct input. Values are
# immutable by convention (selectors and matchers are frozen models).
_STRUCTURES: OrderedDict[str, _Structure | PromQLError] = OrderedDict()
_QUERIES: OrderedDict[tuple[Any, ...], AlertQuery] = OrderedDict()
_MEMO_SIZE = 512


def _memo_put(memo: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    memo[key] = value
    while len(memo) > _MEMO_SIZE:
        memo.popitem(last=False)


def _structure(expr: str) -> _Structure:
    hit = _STRUCTURES.get(expr)
    if hit is None:
        try:
            hit = _parse_structure(expr)
        except PromQLError as exc:
            hit = exc
        _memo_put(_STRUCTURES, expr, hit)
    if isinstance(hit, PromQLError):
        raise PromQLError(*hit.args)
    return hit


def analyse_expression(
    expr: str,
    alert_labels: Mapping[str, str],
    source: Literal["generatorURL", "rules"] = "generatorURL",
) -> AlertQuery:
    """Parse `expr` and derive the selectors to ask for exemplars, narrowed to this alert.

    Memoised: the result is shared by every call with the same expression, source and
    narrowing, and must be treated as read-only."""
    st = _structure(expr)
    # Narrow: alert labels that provably survive the aggregation go into the selector; the
    # rest are applied to returned series only where the series carries that label.
    ignore = {"alertname", "le", "__name__"}
    narrowed: dict[str, str] = {}
    series_filter: dict[str, str] = {}
    surviving = st.primary.surviving
    for k, v in sorted(alert_labels.items()):
        if k in ignore or k in st.have:
            continue
        if surviving is None:
            series_filter[k] = v
        elif k in surviving:
            narrowed[k] = v
    key = (expr, source, tuple(narrowed.items()), tuple(series_filter.items()))
    hit = _QUERIES.get(key)
    if hit is not None:
        return hit
    add = [LabelMatcher(name=k, op="=", value=v) for k, v in narrowed.items()]
    primary_sel = st.primary.selector.with_matchers(add)
    healthy = st.healthy
    if healthy is not None:
        healthy = healthy.with_matchers(
            [m for m in add if m.name not in healthy.label_names()]
        ).without(st.error_matcher)
    aq = AlertQuery(
        expr=expr,
        source=source,
        kind=st.kind,
        selectors=[f.selector for f in st.found],
        primary=primary_sel,
        healthy=healthy,
        error_matcher=st.error_matcher,
        threshold=st.threshold,
        comparison=st.comparison,
        narrowed_with=narrowed,
        series_filter=series_filter,
    )
    _memo_put(_QUERIES, key, aq)
    return aq


def _parse_structure(expr: str) -> _Structure:
    try:
        tree = pp.parse(expr)
    except (ValueError, RuntimeError) as exc:
        raise PromQLError(f"PromQL rejected by the parser: {exc}") from None
    body, comparison, threshold = _strip_comparison(tree)
    found = _collect(body)
    if not found:
        raise PromQLError("the expression selects no series")

    kind: AlertKind = "other"
    primary: _Found | None = None
    healthy: Selector | None = None
    error_matcher: LabelMatcher | None = None

    quantile = [f for f in found if f.in_quantile and (f.selector.metric or "").endswith("_bucket")]
    ratio = _find_ratio(body)
    if quantile:
        kind, primary = "latency", quantile[0]
    elif ratio is not None:
        num = _collect(ratio.lhs)
        den = _collect(ratio.rhs)
        if num and den:
            n, d = num[0], den[0]
            nm, dm = n.selector.metric or "", d.selector.metric or ""
            extra = [m for m in n.selector.matchers if m not in d.selector.matchers]
            if nm.endswith("_sum") and dm.endswith("_count") and _DURATIONISH_NAME.search(nm):
                # average latency: sum/count of a histogram; its buckets hold the exemplars
                bucket = Selector(
                    metric=nm[: -len("_sum")] + "_bucket", matchers=n.selector.matchers
                )
                kind = "latency"
                primary = _Found(selector=bucket, surviving=n.surviving)
            elif nm == dm and extra:
                kind, primary = "error_ratio", n
                error_matcher = (
                    _heuristic_error_matcher(Selector(matchers=tuple(extra))) or extra[0]
                )
                healthy = d.selector
            elif _ERRORISH_NAME.search(nm) and not _ERRORISH_NAME.search(dm):
                kind, primary = "error_ratio", n
                error_matcher = _heuristic_error_matcher(n.selector)
                healthy = d.selector
    if primary is None:
        buckets = [f for f in found if (f.selector.metric or "").endswith("_bucket")]
        if buckets:
            kind, primary = "latency", buckets[0]
        else:
            primary = found[0]
            error_matcher = _heuristic_error_matcher(primary.selector)

    return _Structure(found, kind, primary, healthy, error_matcher, threshold, comparison)
