"""What a PromQL expression means, computed once per rule and read by every check.

`promql-parser` (Rust) parses; its node objects are converted here into small Python records
(`Sel`, `Agg`, `Bin`, `Call`, ...) because each attribute access on the Rust objects copies the
subtree, and several checks walk the same tree. On top of the tree this module answers the
questions checks ask: which selectors are read, which labels can survive to the alert (as pint's
alerts/template check does), which functions are applied to which ranges.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import promql_parser as _pp
import re2 as _re2

from enricher.lint import compat

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


class Matcher(NamedTuple):
    """One label matcher (a tuple: thousands are built per run, and they never change)."""

    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str


@dataclass(slots=True, eq=False)
class Sel:
    """A vector selector; `range` is set (seconds) when it is the inside of `x[5m]`."""

    name: str | None
    matchers: tuple[Matcher, ...]
    range: float | None = None

    def equal(self, label: str) -> str | None:
        """The value this selector pins `label` to with `=`, if it does."""
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


class Labels(NamedTuple):
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


class Query:
    """A parsed expression and the facts checks read from it (the costlier ones on demand)."""

    __slots__ = (
        "_functions",
        "_labels",
        "_memo",
        "calls",
        "features",
        "root",
        "selectors",
        "versioned",
    )

    def __init__(
        self,
        root: Node,
        selectors: list[Sel],
        calls: list[Call],
        features: frozenset[str] = frozenset(),
        versioned: frozenset[str] = frozenset(),
    ) -> None:
        self.root = root
        self.selectors = selectors  # every selector, in reading order
        self.calls = calls  # every function call, outermost first
        # Syntax newer than Prometheus 2.0 (keys of `compat.SYNTAX`) and functions or
        # aggregations in `compat.FUNCTIONS`: the syntax check compares them to the version.
        self.features = features
        self.versioned = versioned
        self._labels: Labels | None = None
        self._functions: frozenset[str] | None = None
        self._memo: dict[int, Labels | None] = {}

    @property
    def labels(self) -> Labels:
        """The labels the result can carry; see `output_labels`."""
        if self._labels is None:
            self._labels = self.labels_of(self.root)
        return self._labels

    def labels_of(self, node: Node) -> Labels:
        """`output_labels(node)` for a node of this query, each subtree computed once."""
        return _labels_of(node, self._memo) or NO_LABELS

    def functions(self) -> frozenset[str]:
        if self._functions is None:
            self._functions = frozenset(c.func for c in self.calls)
        return self._functions

    def counter_ranges(self) -> list[float]:
        """Ranges of the `rate`/`irate`/`increase` windows, in seconds."""
        out = []
        for c in self.calls:
            if c.func in COUNTER_FUNCS and c.args and isinstance(c.args[0], Sel):
                rng = c.args[0].range
                if rng is not None:
                    out.append(rng)
        return out


class TooComplex(Exception):
    """The expression is nested too deeply to analyse safely (not a PromQL error)."""


# promql-parser recurses on the native stack and overflows it (a crash, not an exception)
# somewhere past 3,000 chained operators; real rules stay far below this.
MAX_NESTING = 1000
_NESTING = re.compile(r"\(|\b(?:and|or|unless)\b|[-+*/%^]|[=!<>]=|[<>]")


def parse(expr: str) -> Query:
    """Parse `expr` as Prometheus does; ValueError carries the reason when it does not parse.

    promql-parser checks regexps with Rust's regex crate, which accepts some that Go's RE2
    refuses (`a++`) and refuses some Go accepts (`\\Q.\\E`, `\\0`). So regexp literals are
    swapped for placeholders before parsing and checked here with RE2 under Go's rules, and
    their values put back into the selectors afterwards.
    """
    if len(expr) > MAX_NESTING and len(_NESTING.findall(expr)) > MAX_NESTING:
        raise TooComplex(f"more than {MAX_NESTING} operators and parentheses")
    text, literals, code, features = _prepare(expr)
    regexes = [_regex_value(lit) for lit in literals]
    for value in regexes:
        if _check_regex(value):
            features.add("regexp-named-groups")
    selectors: list[Sel] = []
    calls: list[Call] = []
    converter = _Converter(selectors, calls, regexes)
    root = converter.convert(_pp.parse(text))
    if regexes:
        for sel in selectors:
            if sel.name is None and all(_matches_empty(m) for m in sel.matchers):
                raise ValueError("vector selector must contain at least one non-empty matcher")
    _scan_code(code, features)
    used = {c.func for c in calls} | converter.aggregations
    versioned = frozenset(n for n in used if n in compat.FUNCTIONS)
    return Query(root, selectors, calls, frozenset(features), versioned)


# String literals and comments, in one pass (a `#` inside a string is not a comment).
_LEXEME = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`|#[^\n]*""")
_PLACEHOLDER = "__enricher_re_"
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?:\s*(?:\w+|S)\s*,)*\s*$"
)
_RE_OPTS = _re2.Options()
_RE_OPTS.log_errors = False
_GO_ONLY_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\C")
_NAMED_GROUP = re.compile(r"(?<!\\)(?:\\\\)*\(\?<[^=!]")
_REGEX_VERDICT: dict[str, bool] = {}


def _prepare(expr: str) -> tuple[str, list[str], str, set[str]]:
    """The text promql-parser sees (regexps replaced), the regexp literals, the expression
    without strings and comments (for the duration checks) and the features found on the way.
    """
    features: set[str] = set()
    if '"' not in expr and "'" not in expr and "`" not in expr and "#" not in expr:
        return expr, [], expr, features
    parts: list[str] = []
    code: list[str] = []
    literals: list[str] = []
    depth = 0
    last = 0
    for m in _LEXEME.finditer(expr):
        seg = expr[last : m.start()]
        last = m.end()
        parts.append(seg)
        code.append(seg)
        depth += seg.count("{") - seg.count("}")
        tok = m.group()
        if tok[0] == "#":
            parts.append(tok)
            code.append(" ")
            continue
        before = seg.rstrip()
        if depth > 0 and before.endswith(("=~", "!~")):
            parts.append(f'"{_PLACEHOLDER}{len(literals)}"')
            literals.append(tok)
        else:
            parts.append(_requote(tok) if tok[0] == "`" else tok)
            if depth > 0:
                if before.endswith(("{", ",")):
                    features.add("utf8-names")
            elif _GROUPING.search("".join(code[-6:])):
                features.add("utf8-names")
        code.append("S")
    parts.append(expr[last:])
    code.append(expr[last:])
    return "".join(parts), literals, "".join(code), features


_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_OFFSET = re.compile(r"\boffset\s*-?\s*([^\s)\]},]+)")
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|0[xX][0-9a-fA-F]+")
_BARE_DURATION = re.compile(r"(?<![\w.])(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.])")
_FILL = re.compile(r"\bfill(?:_left|_right)?\s*\(")


def _scan_code(code: str, features: set[str]) -> None:
    """Duration syntax newer than 2.x: numbers as durations, durations as numbers, arithmetic."""
    rest = code
    if "[" in code:
        for inside in _BRACKET.findall(code):
            for part in inside.split(":"):
                _duration_kind(part.strip(), features)
        rest = _BRACKET.sub(" ", rest)
    if "offset" in rest:
        for value in _OFFSET.findall(rest):
            _duration_kind(value.strip(), features)
        rest = _OFFSET.sub(" ", rest)
    if _BARE_DURATION.search(rest):
        features.add("duration-number")
    if "fill" in rest and _FILL.search(rest):
        features.add("fill-modifiers")


def _duration_kind(text: str, features: set[str]) -> None:
    if not text or _DURATION.fullmatch(text):
        return
    if _NUMBER.fullmatch(text):
        features.add("unitless-duration")
    else:
        features.add("duration-expr")


def _regex_value(literal: str) -> str:
    """The value of a PromQL string literal, unquoted as Go unquotes it: a `raw` string has no
    escapes (promql-parser applies them there too, so raw strings never reach it)."""
    if literal[0] == "`" or "\\" not in literal:
        return literal[1:-1]
    node = _pp.parse(literal)
    return str(node.val)


def _requote(raw: str) -> str:
    """A `raw` string literal as the double-quoted literal with the same value."""
    body = raw[1:-1].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def _check_regex(value: str) -> bool:
    """Raise ValueError when Go's regexp package refuses `value` (as Prometheus anchors it);
    return True when it uses `(?<name>...)`, which Go accepts only from 1.22 (Prometheus 2.51)."""
    named = _REGEX_VERDICT.get(value)
    if named is not None:
        return named
    if _GO_ONLY_ESCAPE.search(_strip_classes(value)):
        raise ValueError("error parsing regexp: invalid escape sequence: `\\C`")
    try:
        _re2.compile(f"^(?:{value})$", _RE_OPTS)
    except _re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        raise ValueError(f"error parsing regexp: {msg}") from None
    named = bool(_NAMED_GROUP.search(value))
    if len(_REGEX_VERDICT) < 10_000:
        _REGEX_VERDICT[value] = named
    return named


def _strip_classes(value: str) -> str:
    """`value` without its [...] classes (inside them RE2 refuses `\\C` as Go does)."""
    if "[" not in value:
        return value
    return re.sub(r"\[(?:\\.|[^\]\\])*\]", "", value)


def _matches_empty(m: Matcher) -> bool:
    """Whether the matcher accepts an empty label value (a selector of only those is refused)."""
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    try:
        hit = _re2.compile(f"^(?:{m.value})$", _RE_OPTS).search("") is not None
    except _re2.error:
        return False
    return hit if m.op == "=~" else not hit


class _Converter:
    """Turns promql-parser's nodes into ours, noting selectors and calls on the way."""

    __slots__ = ("aggregations", "calls", "regexes", "selectors")

    def __init__(self, selectors: list[Sel], calls: list[Call], regexes: list[str]) -> None:
        self.selectors = selectors
        self.calls = calls
        self.regexes = regexes
        self.aggregations: set[str] = set()

    def convert(self, e: Any) -> Node:
        t = type(e)
        if t is _pp.VectorSelector:
            return self.selector(e, None)
        if t is _pp.MatrixSelector:
            return self.selector(e.vector_selector, e.range.total_seconds())
        if t is _pp.ParenExpr:
            return self.convert(e.expr)
        if t is _pp.Call:
            func = e.func
            call = Call(func.name, [], _TYPES[int(func.return_type)])
            self.calls.append(call)
            call.args = [self.convert(a) for a in e.args]
            return call
        if t is _pp.AggregateExpr:
            mod = e.modifier
            by = without = None
            if mod is not None:
                if int(mod.type) == 0:
                    by = tuple(mod.labels)
                else:
                    without = tuple(mod.labels)
            param = e.param
            op = str(e.op)
            self.aggregations.add(op)
            return Agg(
                op,
                self.convert(e.expr),
                None if param is None else self.convert(param),
                by,
                without,
            )
        if t is _pp.BinaryExpr:
            node = Bin(str(e.op), self.convert(e.lhs), self.convert(e.rhs))
            mod = e.modifier
            if mod is not None:
                node.return_bool = bool(mod.return_bool)
                node.card = _CARD[int(mod.card)]
                node.include = tuple(mod.group_labels or ())
                matching = mod.matching
                if matching is not None:
                    if int(matching.type) == 0:
                        node.on = tuple(matching.labels)
                    else:
                        node.ignoring = tuple(matching.labels)
            return node
        if t is _pp.NumberLiteral:
            return Num(float(e.val))
        if t is _pp.StringLiteral:
            return Str(str(e.val))
        if t is _pp.SubqueryExpr:
            return Sub(self.convert(e.expr), e.range.total_seconds())
        if t is _pp.UnaryExpr:
            return Neg(self.convert(e.expr))
        raise ValueError(f"unsupported PromQL node {t.__name__}")

    def selector(self, vs: Any, rng: float | None) -> Sel:
        ms = vs.matchers
        matchers = tuple(Matcher(m.name, _MATCH_OPS[int(m.op)], m.value) for m in ms.matchers)
        if self.regexes:
            matchers = tuple(
                m._replace(value=self.regexes[int(m.value[len(_PLACEHOLDER) :])])
                if m.value.startswith(_PLACEHOLDER) and m.op in ("=~", "!~")
                else m
                for m in matchers
            )
        name = vs.name
        if name is None:
            for m in matchers:
                if m.name == "__name__" and m.op == "=":
                    name = m.value
        if ms.or_matchers:  # promql-parser's extension: no Prometheus parses it
            raise ValueError('unexpected identifier "or" in label matching')
        sel = Sel(name, matchers, rng)
        self.selectors.append(sel)
        return sel


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
    """Every node, parents before children (left to right): the order `children` gives."""
    stack = [node]
    push = stack.append
    while stack:
        n = stack.pop()
        yield n
        t = type(n)
        if t is Bin:
            push(n.rhs)  # type: ignore[union-attr]
            push(n.lhs)  # type: ignore[union-attr]
        elif t is Call:
            stack.extend(reversed(n.args))  # type: ignore[union-attr]
        elif t is Agg:
            push(n.expr)  # type: ignore[union-attr]
            if n.param is not None:  # type: ignore[union-attr]
                push(n.param)  # type: ignore[union-attr]
        elif t is Sub or t is Neg:
            push(n.expr)  # type: ignore[union-attr]


def output_labels(node: Node) -> Labels:
    """Labels the series returned by `node` can carry (pint's "labels that survive")."""
    return _labels_of(node, {}) or NO_LABELS


def _labels_of(node: Node, memo: dict[int, Labels | None]) -> Labels | None:
    """As output_labels, or None when `node` is a scalar or string, not series."""
    key = id(node)
    if key in memo:
        return memo[key]
    got = memo[key] = _compute_labels(node, memo)
    return got


def _compute_labels(node: Node, memo: dict[int, Labels | None]) -> Labels | None:
    if isinstance(node, Sel):
        return Labels(
            None,
            frozenset(),
            frozenset(
                m.name for m in node.matchers if m.op == "=" and m.value and m.name != "__name__"
            ),
        )
    if isinstance(node, Num | Str):
        return None
    if isinstance(node, Sub | Neg):
        return _labels_of(node.expr, memo)
    if isinstance(node, Agg):
        inner = _labels_of(node.expr, memo) or NO_LABELS
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
        return _call_labels(node, memo)
    # Binary operators: a scalar side contributes nothing.
    left = _labels_of(node.lhs, memo)
    if node.op in ("and", "unless") and left is not None:
        return left
    right = _labels_of(node.rhs, memo)
    if left is None or right is None:
        return left or right
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


def _call_labels(node: Call, memo: dict[int, Labels | None]) -> Labels | None:
    f = node.func
    if node.returns != "vector":
        return None
    if f in _NO_LABEL_FUNCS:
        return NO_LABELS
    if f in ("absent", "absent_over_time"):
        arg = node.args[0] if node.args else None
        if isinstance(arg, Sel):
            names = frozenset(m.name for m in arg.matchers if m.op == "=" and m.name != "__name__")
            return Labels(names, frozenset(), names)
        return NO_LABELS
    result = next((r for a in node.args if (r := _labels_of(a, memo)) is not None), None)
    if result is None:
        return NO_LABELS
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
