"""A parser for the Go text/template actions Prometheus expands in alert labels and annotations.

Why write one: `promtool check rules` rejects a rule whose template does not parse, and the
`annotations` check needs to know which labels a template reads (`$labels.service`,
`.Labels.service`, `index $labels "service"`). No Python library parses Go templates, and the
action grammar is small: this module lexes and parses actions the way `text/template/parse` does,
with the variables (`$labels`, `$value`, ...) and functions Prometheus defines.

It is deliberately lenient where Go is lenient and where it is unsure (number spelling, the types
of arguments): a false "template does not parse" would block a rule promtool accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

# Go's builtins plus every function Prometheus (2.x and 3.x) registers for rule templates.
FUNCTIONS = frozenset(
    [
        "and",
        "call",
        "html",
        "index",
        "slice",
        "js",
        "len",
        "not",
        "or",
        "print",
        "printf",
        "println",
        "urlquery",
        "eq",
        "ge",
        "gt",
        "le",
        "lt",
        "ne",
        "query",
        "first",
        "label",
        "value",
        "strvalue",
        "args",
        "reReplaceAll",
        "safeHtml",
        "match",
        "title",
        "toUpper",
        "toLower",
        "graphLink",
        "tableLink",
        "sortByLabel",
        "humanize",
        "humanize1024",
        "humanizeDuration",
        "humanizePercentage",
        "humanizeTimestamp",
        "toTime",
        "toDuration",
        "now",
        "pathPrefix",
        "externalURL",
        "parseDuration",
        "stripPort",
        "stripDomain",
        "pathEscape",
        "queryEscape",
    ]
)
# Prometheus prepends `{{$labels := .Labels}}{{$externalLabels := ...}}...` to every template.
PREDEFINED = ("$", "$labels", "$externalLabels", "$externalURL", "$value")
_KEYWORDS = frozenset(
    ["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"]
)
_SPACE = " \t\r\n"
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_.]*(?:[pP][+-]?[0-9_]+)?|[0-9][0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9_]+)?"
    r"|\.[0-9][0-9_]*(?:[eE][+-]?[0-9_]+)?)i?"
)
_WORD = re.compile(r"\w+")


class TemplateError(ValueError):
    """The template does not parse; the message follows Go's wording where it can."""


@dataclass(frozen=True, slots=True)
class Template:
    """What the `annotations` and `syntax` checks need to know about one template text."""

    error: str | None = None
    # Labels read as `$labels.X`, `.Labels.X` or `index $labels "X"`, in order of appearance.
    label_refs: tuple[str, ...] = ()
    # Labels only tested for presence (`{{ if $labels.X }}`): a missing one is handled.
    guarded: frozenset[str] = frozenset()


_PLAIN = Template()


@dataclass(slots=True)
class _Token:
    kind: str  # string, raw, char, number, var, field, dot, ident, kw, bool, nil, op
    text: str
    start: int
    end: int


@dataclass(slots=True)
class _State:
    vars: list[str] = field(default_factory=lambda: list(PREDEFINED))
    # (keyword, number of variables in scope when the block opened, dot was rebound)
    blocks: list[tuple[str, int, bool]] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    guarded: set[str] = field(default_factory=set)

    def dot_is_root(self) -> bool:
        return not any(rebinds for _, _, rebinds in self.blocks)


@lru_cache(maxsize=8192)
def parse_template(text: str) -> Template:
    """Parse `text`; cached because rule sets repeat the same summaries and URLs many times."""
    if "{{" not in text:
        return _PLAIN
    state = _State()
    try:
        for tokens in _actions(text):
            _parse_action(tokens, state)
        if state.blocks:
            raise TemplateError(
                f"unexpected EOF: missing {{{{end}}}} for {{{{{state.blocks[-1][0]}}}}}"
            )
    except TemplateError as exc:
        return Template(error=str(exc))
    return Template(None, tuple(dict.fromkeys(state.refs)), frozenset(state.guarded))


def _actions(text: str):
    """Yield the token list of every action, skipping text and comments."""
    n = len(text)
    pos = 0
    while True:
        i = text.find("{{", pos)
        if i < 0:
            return
        p = i + 2
        if p + 1 < n and text[p] == "-" and text[p + 1] in _SPACE:
            p += 2
        if text.startswith("/*", p):
            j = text.find("*/", p + 2)
            if j < 0:
                raise TemplateError("unclosed comment")
            p = j + 2
            if text.startswith("}}", p):
                pos = p + 2
            elif p < n and text[p] in _SPACE and text.startswith("-}}", p + 1):
                pos = p + 4
            else:
                raise TemplateError("comment ends before closing delimiter")
            continue
        tokens: list[_Token] = []
        while True:
            if p >= n:
                raise TemplateError("unclosed action")
            c = text[p]
            if c == "}" and text.startswith("}}", p):
                pos = p + 2
                break
            if c in _SPACE:
                if text.startswith("-}}", p + 1):
                    pos = p + 4
                    break
                p += 1
                continue
            start = p
            if c == '"':
                p += 1
                while True:
                    if p >= n or text[p] == "\n":
                        raise TemplateError("unterminated quoted string")
                    if text[p] == "\\":
                        p += 2
                        continue
                    if text[p] == '"':
                        break
                    p += 1
                p += 1
                tokens.append(_Token("string", _unquote(text[start + 1 : p - 1]), start, p))
            elif c == "`":
                j = text.find("`", p + 1)
                if j < 0:
                    raise TemplateError("unterminated raw quoted string")
                p = j + 1
                tokens.append(_Token("string", text[start + 1 : j], start, p))
            elif c == "'":
                p += 1
                while True:
                    if p >= n or text[p] == "\n":
                        raise TemplateError("unterminated character constant")
                    if text[p] == "\\":
                        p += 2
                        continue
                    if text[p] == "'":
                        break
                    p += 1
                p += 1
                tokens.append(_Token("char", text[start:p], start, p))
            elif c == "$":
                m = _WORD.match(text, p + 1)
                p = m.end() if m else p + 1
                tokens.append(_Token("var", text[start:p], start, p))
            elif c == ".":
                if p + 1 < n and text[p + 1].isdigit():
                    m = _NUMBER.match(text, p)
                    assert m is not None
                    p = m.end()
                    tokens.append(_Token("number", text[start:p], start, p))
                else:
                    m = _WORD.match(text, p + 1)
                    if m:
                        p = m.end()
                        tokens.append(_Token("field", text[start + 1 : p], start, p))
                    else:
                        p += 1
                        tokens.append(_Token("dot", ".", start, p))
            elif c.isdigit() or (
                c in "+-" and p + 1 < n and (text[p + 1].isdigit() or text[p + 1] == ".")
            ):
                m = _NUMBER.match(text, p)
                if m is None or m.end() == p:
                    raise TemplateError(f"bad number syntax: {text[p : p + 10]!r}")
                p = m.end()
                tokens.append(_Token("number", text[start:p], start, p))
            elif c.isalpha() or c == "_":
                m = _WORD.match(text, p)
                assert m is not None
                p = m.end()
                word = text[start:p]
                kind = (
                    "kw"
                    if word in _KEYWORDS
                    else "bool"
                    if word in ("true", "false")
                    else "nil"
                    if word == "nil"
                    else "ident"
                )
                tokens.append(_Token(kind, word, start, p))
            elif c == ":" and text.startswith(":=", p):
                p += 2
                tokens.append(_Token("op", ":=", start, p))
            elif c in "=|(),":
                p += 1
                tokens.append(_Token("op", c, start, p))
            else:
                raise TemplateError(f"unexpected bad character {c!r} in command")
        yield tokens


def _unquote(body: str) -> str:
    if "\\" not in body:
        return body
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return body


def _parse_action(tokens: list[_Token], st: _State) -> None:
    if not tokens:
        raise TemplateError("missing value for command")
    head = tokens[0]
    if head.kind != "kw":
        _pipeline(tokens, st, declare=True)
        return
    word, rest = head.text, tokens[1:]
    if word in ("if", "with", "range"):
        depth = len(st.vars)
        if not rest:
            raise TemplateError(f"missing value for {word}")
        before = len(st.refs)
        _pipeline(rest, st, declare=True, range_decl=word == "range")
        if word != "range":
            st.guarded.update(st.refs[before:])
        st.blocks.append((word, depth, word != "if"))
    elif word == "else":
        if not st.blocks or st.blocks[-1][0] not in ("if", "with", "range"):
            raise TemplateError("unexpected {{else}}")
        if rest:
            if rest[0].kind != "kw" or rest[0].text not in ("if", "with"):
                raise TemplateError(f"unexpected {rest[0].text!r} in else")
            if len(rest) == 1:
                raise TemplateError(f"missing value for {rest[0].text}")
            before = len(st.refs)
            _pipeline(rest[1:], st, declare=True)
            st.guarded.update(st.refs[before:])
    elif word == "end":
        if rest:
            raise TemplateError(f"unexpected {rest[0].text!r} in end")
        if not st.blocks:
            raise TemplateError("unexpected {{end}}")
        _, depth, _ = st.blocks.pop()
        del st.vars[depth:]
    elif word in ("define", "block", "template"):
        if not rest or rest[0].kind != "string":
            raise TemplateError(f"unexpected {_show(rest)} in {word} clause")
        if word == "define":
            if len(rest) > 1:
                raise TemplateError(f"unexpected {rest[1].text!r} in define clause")
            st.blocks.append(("define", len(st.vars), True))
            return
        if len(rest) > 1:
            _pipeline(rest[1:], st, declare=False)
        if word == "block":
            st.blocks.append(("block", len(st.vars), True))
    elif word in ("break", "continue"):
        if rest:
            raise TemplateError(f"unexpected {rest[0].text!r} in {word}")
        if not any(kw == "range" for kw, _, _ in st.blocks):
            raise TemplateError(f"{{{{{word}}}}} outside {{{{range}}}}")
    else:
        raise TemplateError(f"unexpected <{word}> in command")


def _show(tokens: list[_Token]) -> str:
    return repr(tokens[0].text) if tokens else "EOF"


def _pipeline(tokens: list[_Token], st: _State, *, declare: bool, range_decl: bool = False) -> None:
    """Parse `[$x :=] command | command ...`; declared variables join the current scope."""
    i = 0
    if declare and tokens and tokens[0].kind == "var":
        names = [tokens[0].text]
        j = 1
        if range_decl and len(tokens) > 2 and tokens[1].text == "," and tokens[2].kind == "var":
            names.append(tokens[2].text)
            j = 3
        if j < len(tokens) and tokens[j].kind == "op" and tokens[j].text in (":=", "="):
            if tokens[j].text == "=":
                for name in names:
                    if name not in st.vars:
                        raise TemplateError(f"undefined variable {name!r}")
            else:
                st.vars.extend(names)
            i = j + 1
            if i >= len(tokens):
                raise TemplateError("missing value for command")
    _commands(tokens, i, len(tokens), st)


def _commands(tokens: list[_Token], i: int, end: int, st: _State) -> None:
    """Commands separated by `|` between tokens[i:end]."""
    start = i
    depth = 0
    for j in range(i, end + 1):
        t = tokens[j] if j < end else None
        if t is not None and t.kind == "op" and t.text == "(":
            depth += 1
        elif t is not None and t.kind == "op" and t.text == ")":
            depth -= 1
            if depth < 0:
                raise TemplateError("unexpected right paren")
        elif t is None or (t.kind == "op" and t.text == "|" and depth == 0):
            if t is None and depth > 0:
                raise TemplateError("unclosed left paren")
            if j == start:
                raise TemplateError("missing value for command")
            _command(tokens, start, j, st)
            start = j + 1


def _command(tokens: list[_Token], i: int, end: int, st: _State) -> None:
    operands: list[list[_Token]] = []
    while i < end:
        t = tokens[i]
        if t.kind == "op" and t.text == "(":
            close = _matching_paren(tokens, i, end)
            _commands(tokens, i + 1, close, st)
            operand = [t]
            i = close + 1
        elif t.kind in ("kw", "op"):
            raise TemplateError(f"unexpected {t.text!r} in operand")
        else:
            if t.kind == "var" and t.text not in st.vars:
                raise TemplateError(f"undefined variable {t.text!r}")
            if t.kind == "ident" and t.text not in FUNCTIONS:
                raise TemplateError(f"function {t.text!r} not defined")
            operand = [t]
            i += 1
        # Field chains bind to the term they touch: `$labels.instance`, `(query "x").Value`.
        while i < end and tokens[i].kind == "field" and tokens[i].start == tokens[i - 1].end:
            operand.append(tokens[i])
            i += 1
        operands.append(operand)
    _collect_refs(operands, st)


def _matching_paren(tokens: list[_Token], i: int, end: int) -> int:
    depth = 0
    for j in range(i, end):
        if tokens[j].kind == "op" and tokens[j].text == "(":
            depth += 1
        elif tokens[j].kind == "op" and tokens[j].text == ")":
            depth -= 1
            if depth == 0:
                return j
    raise TemplateError("unclosed left paren")


def _collect_refs(operands: list[list[_Token]], st: _State) -> None:
    for k, operand in enumerate(operands):
        head = operand[0]
        if (head.kind == "var" and head.text == "$labels" and len(operand) > 1) or (
            head.kind == "field" and head.text == "Labels" and len(operand) > 1 and st.dot_is_root()
        ):
            st.refs.append(operand[1].text)
        elif (
            head.kind == "ident"
            and head.text == "index"
            and k == 0
            and len(operands) >= 3
            and len(operands[1]) == 1
            and operands[1][0].kind == "var"
            and operands[1][0].text == "$labels"
            and operands[2][0].kind == "string"
            and len(operands[2]) == 1
        ):
            st.refs.append(operands[2][0].text)
