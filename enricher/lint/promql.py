"""What a PromQL expression means, computed once per rule and read by every check.

`promql-parser` (Rust) parses; its node objects are converted here into small Python records
(`Sel`, `Agg`, `Bin`, `Call`, ...) because each attribute access on the Rust objects copies the
subtree, and several checks walk the same tree. On top of the tree this module answers the
questions checks ask: which selectors are read, which labels can survive to the alert (as pint's
alerts/template check does), which functions are applied to which ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import promql_parser as _pp

# Functions Prometheus 2.x knows that promql-parser (which follows 3.x) no longer does.
_pp.register_extra_functions(
    [
        _pp.Function(
            "holt_winters",
            [_pp.ValueType.Matrix, _pp.ValueType.Scalar, _pp.ValueType.Scalar],
            _pp.ValueType.Vector,
        )
    ]
)

COMPARISONS = frozenset(("==", "!=", ">", "<", ">=", "<="))
SET_OPS = frozenset(("and", "or", "unless"))
COUNTER_FUNCS = frozenset(("rate", "irate", "increase"))
_MATCH_OPS = ("=", "!=", "=~", "!~")
_CARD = ("one-to-one", "many-to-one", "one-to-many", "many-to-many")
_TYPES = ("vector", "scalar", "matrix", "string")
_PRESERVING_AGGS = frozenset(("topk", "bottomk", "limitk", "limit_ratio"))
_NO_LABEL_FUNCS = frozenset(("vector", "time", "scalar", "pi"))


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str


@dataclass(slots=True, eq=False)
class Sel:
    """A vector selector; `range` is set (seconds) when it is the inside of `x[5m]`."""

    name: str | None
    matchers: tuple[Matcher, ...]
    range: float | None = None
    has_or: bool = False

    def equal(self, label: str) -> str | None:
        """The value this selector pins `label` to with `=`, if it does."""
        if self.has_or:
            return None
        for m in self.matchers:
            if m.name == label and m.op == "=":
                return m.value
        return None

    def text(self, *extra: Matcher) -> str:
        """PromQL for this selector (without its range), with `extra` matchers added."""
        matchers = [m for m in self.matchers if not (m.name == "__name__" and self.name)]
        matchers += extra
        inner = ",".join(f'{m.name}{m.op}"{_escape(m.value)}"' for m in matchers)
        return f"{self.name or ''}{{{inner}}}" if inner or not self.name else self.name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True, eq=False)
class Agg:
    op: str
    expr: Node
    param: Node | None
    by: tuple[str, ...] | None  # set for `by (...)`
    without: tuple[str, ...] | None  # set for `without (...)`


@dataclass(slots=True, eq=False)
class Bin:
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] | None = None
    card: str = "one-to-one"
    include: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class Call:
    func: str
    args: list[Node]
    returns: str


@dataclass(slots=True, eq=False)
class Num:
    value: float


@dataclass(slots=True, eq=False)
class Str:
    value: str


@dataclass(slots=True, eq=False)
class Sub:
    expr: Node
    range: float


@dataclass(slots=True, eq=False)
class Neg:
    expr: Node


Node = Sel | Agg | Bin | Call | Num | Str | Sub | Neg


@dataclass(frozen=True, slots=True)
class Labels:
    """Which labels can be on the series an expression returns.

    `only is None` means "whatever the selected series carry", minus `dropped`. `certain` holds
    the labels the query itself makes sure of (`by (service)`, `service="checkout"`).
    """

    only: frozenset[str] | None = None
    dropped: frozenset[str] = frozenset()
    certain: frozenset[str] = frozenset()

    def may_have(self, label: str) -> bool:
        if self.only is not None:
            return label in self.only
        return label not in self.dropped

    def keep(self, names: frozenset[str]) -> Labels:
        only = names if self.only is None else self.only & names
        return Labels(only - self.dropped, frozenset(), self.certain & names)

    def remove(self, names: frozenset[str]) -> Labels:
        if self.only is not None:
            return Labels(self.only - names, frozenset(), self.certain - names)
        return Labels(None, self.dropped | names, self.certain - names)

    def add(self, names: frozenset[str], certain: bool = True) -> Labels:
        only = None if self.only is None else self.only | names
        return Labels(only, self.dropped - names, self.certain | names if certain else self.certain)


NO_LABELS = Labels(frozenset())


@dataclass(slots=True, eq=False)
class Query:
    """A parsed expression and the facts checks read from it."""

    root: Node
    selectors: list[Sel] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    labels: Labels = field(default_factory=Labels)

    def functions(self) -> set[str]:
        return {c.func for c in self.calls}

    def counter_ranges(self) -> list[float]:
        """Ranges of the `rate`/`irate`/`increase` windows, in seconds."""
        out = []
        for c in self.calls:
            if c.func in COUNTER_FUNCS and c.args and isinstance(c.args[0], Sel):
                rng = c.args[0].range
                if rng is not None:
                    out.append(rng)
        return out


def parse(expr: str) -> Query:
    """Parse `expr`; ValueError carries promql-parser's message when it does not parse."""
    root = _convert(_pp.parse(expr))
    q = Query(root)
    for node in walk(root):
        if isinstance(node, Sel):
            q.selectors.append(node)
        elif isinstance(node, Call):
            q.calls.append(node)
    q.labels = output_labels(root)
    return q


def _labels(modifier: object) -> tuple[str, ...]:
    return tuple(modifier.labels)  # type: ignore[attr-defined]


def _convert(e: object) -> Node:
    t = type(e)
    if t is _pp.VectorSelector:
        return _selector(e, None)
    if t is _pp.MatrixSelector:
        return _selector(e.vector_selector, e.range.total_seconds())  # type: ignore[attr-defined]
    if t is _pp.ParenExpr:
        return _convert(e.expr)  # type: ignore[attr-defined]
    if t is _pp.Call:
        func = e.func  # type: ignore[attr-defined]
        return Call(
            func.name,
            [_convert(a) for a in e.args],  # type: ignore[attr-defined]
            _TYPES[int(func.return_type)],
        )
    if t is _pp.AggregateExpr:
        mod = e.modifier  # type: ignore[attr-defined]
        by = without = None
        if mod is not None:
            if int(mod.type) == 0:
                by = _labels(mod)
            else:
                without = _labels(mod)
        param = e.param  # type: ignore[attr-defined]
        return Agg(
            str(e.op),  # type: ignore[attr-defined]
            _convert(e.expr),  # type: ignore[attr-defined]
            None if param is None else _convert(param),
            by,
            without,
        )
    if t is _pp.BinaryExpr:
        node = Bin(str(e.op), _convert(e.lhs), _convert(e.rhs))  # type: ignore[attr-defined]
        mod = e.modifier  # type: ignore[attr-defined]
        if mod is not None:
            node.return_bool = bool(mod.return_bool)
            node.card = _CARD[int(mod.card)]
            node.include = tuple(mod.group_labels or ())
            matching = mod.matching
            if matching is not None:
                if int(matching.type) == 0:
                    node.on = _labels(matching)
                else:
                    node.ignoring = _labels(matching)
        return node
    if t is _pp.NumberLiteral:
        return Num(float(e.val))  # type: ignore[attr-defined]
    if t is _pp.StringLiteral:
        return Str(str(e.val))  # type: ignore[attr-defined]
    if t is _pp.SubqueryExpr:
        return Sub(_convert(e.expr), e.range.total_seconds())  # type: ignore[attr-defined]
    if t is _pp.UnaryExpr:
        return Neg(_convert(e.expr))  # type: ignore[attr-defined]
    raise ValueError(f"unsupported PromQL node {t.__name__}")


def _selector(vs: object, rng: float | None) -> Sel:
    ms = vs.matchers  # type: ignore[attr-defined]
    matchers = tuple(Matcher(m.name, _MATCH_OPS[int(m.op)], m.value) for m in ms.matchers)
    name = vs.name  # type: ignore[attr-defined]
    if name is None:
        for m in matchers:
            if m.name == "__name__" and m.op == "=":
                name = m.value
    return Sel(name, matchers, rng, bool(ms.or_matchers))


def children(node: Node) -> list[Node]:
    if isinstance(node, Bin):
        return [node.lhs, node.rhs]
    if isinstance(node, Agg):
        return [node.expr] if node.param is None else [node.param, node.expr]
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Sub | Neg):
        return [node.expr]
    return []


def walk(node: Node) -> Iterator[Node]:
    """Every node, parents before children."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


def value_type(node: Node) -> str:
    if isinstance(node, Sel):
        return "vector" if node.range is None else "matrix"
    if isinstance(node, Num):
        return "scalar"
    if isinstance(node, Str):
        return "string"
    if isinstance(node, Call):
        return node.returns
    if isinstance(node, Sub):
        return "matrix"
    if isinstance(node, Neg):
        return value_type(node.expr)
    if isinstance(node, Bin):
        if value_type(node.lhs) == "vector" or value_type(node.rhs) == "vector":
            return "vector"
        return "scalar"
    return "vector"


def output_labels(node: Node) -> Labels:
    """Labels the series returned by `node` can carry (pint's "labels that survive")."""
    if isinstance(node, Sel):
        return Labels(
            None,
            frozenset(),
            frozenset(
                m.name for m in node.matchers if m.op == "=" and m.value and m.name != "__name__"
            ),
        )
    if isinstance(node, Num | Str):
        return NO_LABELS
    if isinstance(node, Sub | Neg):
        return output_labels(node.expr)
    if isinstance(node, Agg):
        inner = output_labels(node.expr)
        if node.op in _PRESERVING_AGGS:
            return inner
        if node.by is not None:
            by = frozenset(node.by)
            kept = inner.keep(by)
            result = Labels(kept.only, frozenset(), frozenset(b for b in by if inner.may_have(b)))
        elif node.without is not None:
            result = inner.remove(frozenset(node.without) | {"__name__"})
        else:
            result = NO_LABELS
        if node.op == "count_values" and isinstance(node.param, Str):
            result = result.add(frozenset((node.param.value,)))
        return result
    if isinstance(node, Call):
        return _call_labels(node)
    # Binary operators.
    lt, rt = value_type(node.lhs), value_type(node.rhs)
    if lt != "vector" and rt != "vector":
        return NO_LABELS
    if lt != "vector":
        return output_labels(node.rhs)
    if rt != "vector":
        return output_labels(node.lhs)
    left = output_labels(node.lhs)
    if node.op in ("and", "unless"):
        return left
    right = output_labels(node.rhs)
    if node.op == "or":
        only = None if left.only is None or right.only is None else left.only | right.only
        return Labels(only, left.dropped & right.dropped, left.certain & right.certain)
    include = frozenset(node.include)
    if node.card == "many-to-one":
        return left.add(include)
    if node.card == "one-to-many":
        return right.add(include)
    if node.on is not None:
        return left.keep(frozenset(node.on))
    if node.ignoring is not None:
        return left.remove(frozenset(node.ignoring))
    return left


def _call_labels(node: Call) -> Labels:
    f = node.func
    if f in _NO_LABEL_FUNCS or node.returns != "vector":
        return NO_LABELS
    if f in ("absent", "absent_over_time"):
        arg = node.args[0] if node.args else None
        if isinstance(arg, Sel) and not arg.has_or:
            names = frozenset(m.name for m in arg.matchers if m.op == "=" and m.name != "__name__")
            return Labels(names, frozenset(), names)
        return NO_LABELS
    source = next((a for a in node.args if value_type(a) in ("vector", "matrix")), None)
    if source is None:
        return NO_LABELS
    result = output_labels(source)
    if f == "histogram_quantile":
        result = result.remove(frozenset(("le",)))
    elif f in ("label_replace", "label_join") and len(node.args) > 1:
        dst = node.args[1]
        if isinstance(dst, Str):
            result = result.add(frozenset((dst.value,)))
    return result


def unwrap(node: Node) -> Node:
    """`node` without a leading unary minus (parentheses are already gone)."""
    while isinstance(node, Neg):
        node = node.expr
    return node


def constant(node: Node) -> float | None:
    """The value of a number-only expression (`14.4 * (1 - 0.999)`), if it is one."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Neg):
        v = constant(node.expr)
        return None if v is None else -v
    if isinstance(node, Bin) and node.op in ("+", "-", "*", "/"):
        a, b = constant(node.lhs), constant(node.rhs)
        if a is None or b is None:
            return None
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        return a / b if b else None
    return None
