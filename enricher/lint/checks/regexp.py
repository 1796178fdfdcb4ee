"""regexp: label regex matchers that say something other than what they seem to.

Why: Prometheus tests every `=~`/`!~` matcher against every value of the label, and anchors it
fully (`job=~"api"` is `^(?:api)$`). So:

- a regex with no regex in it (`job=~"api"`) is a slower, misleading `job="api"` (info);
- `^` and `$` around a regex (`job=~"^api-.*$"`) are redundant: the author usually thinks the
  match is otherwise a substring match, and the next edit gets it wrong (info);
- `{__name__=~"job:.*"}` picks metrics by a pattern on their names: a renamed or new metric
  silently joins or leaves the alert, and the rules it depends on cannot be followed (warning);
- `label=~".*"` matches every value, and also series without the label: it filters nothing
  (info);
- `job="api"` next to `job=~"web-.*"` in one selector can never both hold: the selector
  returns nothing and the alert can never fire (error; only for simple regexes, whose meaning
  is the same in Python and Go's RE2).

Regex syntax is the syntax check's business.

Bad:

    - alert: CheckoutHighErrorRate
      expr: |
        sum(rate(http_requests_total{job=~"checkout", status=~"^5..$"}[5m]))
          / sum(rate(http_requests_total{job=~"checkout"}[5m])) > 0.05

Good:

    - alert: CheckoutHighErrorRate
      expr: |
        sum(rate(http_requests_total{job="checkout", status=~"5.."}[5m]))
          / sum(rate(http_requests_total{job="checkout"}[5m])) > 0.05
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.promql import Matcher, Sel

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "regexp"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_META = frozenset("\\.+*?()|[]{}^$")
_PUNCT = r"[!-/:-@\[-`{-~]"  # ASCII punctuation: `\` + one of these is literal in Go and Python
_MATCH_ALL = frozenset((".*", "(.*)", "(?:.*)"))
# Regexes Python's `re` reads as Go's RE2 does: literals, escaped punctuation, `.`, simple
# classes, plain groups, `|` and `* + ?` (lazy allowed). No flags, counted repetition, `\d`-style
# classes, anchors, POSIX classes, possessive quantifiers, or quantified groups (backtracking).
_SAFE = re.compile(
    rf"""(?:
        [^\\\[\]{{}}()^$|*+?]
      | \\{_PUNCT}
      | \[\^?(?:[^\\\[\]^]|\\{_PUNCT})+\]
      | \((?!\?) | \)(?![*+{{]) | \|
      | [*+?]\??(?![*+?{{])
    )*""",
    re.X,
)
_MAX = 200


def check(rule: Rule, ctx: Context) -> list[Finding]:
    q = rule.query
    if q is None:
        return []
    out: list[Finding] = []
    seen: set[str] = set()
    for sel in q.selectors:
        for found in _selector(rule, sel):
            if found.message not in seen:
                seen.add(found.message)
                out.append(found)
    return out


def _selector(rule: Rule, sel: Sel) -> list[Finding]:
    out: list[Finding] = []
    line = rule.expr_line
    for m in sel.matchers:
        if m.op not in ("=~", "!~"):
            continue
        shown = _show(m)
        pattern = _strip_anchors(m.value)
        literal = _literal(pattern)
        if literal is not None:
            eq = "=" if m.op == "=~" else "!="
            out.append(
                rule.finding(
                    ID,
                    Severity.INFO,
                    f"`{shown}` is a regex match on the fixed string `{literal}`",
                    f"use `{_show(Matcher(m.name, eq, literal))}`: an equality match is faster "
                    "and says what it means",
                    line,
                )
            )
            continue
        if pattern != m.value:
            out.append(
                rule.finding(
                    ID,
                    Severity.INFO,
                    f"`{shown}`: Prometheus anchors every regex at both ends, so `^` and `$` "
                    "are redundant",
                    f"use `{_show(_unanchored(m, pattern))}`",
                    line,
                )
            )
        if m.op == "=~" and pattern in _MATCH_ALL:
            out.append(
                rule.finding(
                    ID,
                    Severity.INFO,
                    f"`{shown}` matches every value, and series without `{m.name}`: it filters "
                    "nothing",
                    "remove the matcher",
                    line,
                )
            )
        elif m.name == "__name__" and m.op == "=~":
            out.append(
                rule.finding(
                    ID,
                    Severity.WARNING,
                    f"`{shown}` selects metrics by a regex on their names: a renamed or new "
                    "metric silently joins or leaves the query, and the recording rules it "
                    "reads cannot be followed",
                    "select each metric by its name (`a or b`)",
                    line,
                )
            )
    out.extend(_conflicts(rule, sel))
    return out


def _conflicts(rule: Rule, sel: Sel) -> list[Finding]:
    """`job="a"` with `job=~"b.*"` (or `job!~"a|b"`) in one selector: it selects nothing."""
    out: list[Finding] = []
    pinned = [m for m in sel.matchers if m.op == "="]
    if not pinned:
        return out
    for m in sel.matchers:
        if m.op not in ("=~", "!~"):
            continue
        regex = _compile(_strip_anchors(m.value))
        if regex is None:
            continue
        for eq in pinned:
            if eq.name != m.name or len(eq.value) > _MAX:
                continue
            matches = regex.fullmatch(eq.value) is not None
            if matches == (m.op == "=~"):
                continue
            out.append(
                rule.finding(
                    ID,
                    Severity.ERROR,
                    f"`{_show(eq)}` and `{_show(m)}` in one selector can never both hold: "
                    "it selects nothing, so the rule never returns anything",
                    f"remove one of the two `{m.name}` matchers, or fix the regex",
                    rule.expr_line,
                )
            )
    return out


def _compile(pattern: str) -> re.Pattern[str] | None:
    """`pattern` compiled by Python, when it means the same there as in Go's RE2."""
    if not pattern or len(pattern) > _MAX or not _SAFE.fullmatch(pattern):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(pattern)
    except re.error:
        return None  # the syntax check reports it


def _strip_anchors(value: str) -> str:
    """`value` without a leading `^` and an unescaped trailing `$` (both redundant)."""
    if value.startswith("^"):
        value = value[1:]
    if value.endswith("$"):
        backslashes = len(value) - 1 - len(value[:-1].rstrip("\\"))
        if backslashes % 2 == 0:
            value = value[:-1]
    return value


def _unanchored(m: Matcher, pattern: str) -> Matcher:
    if pattern:
        return Matcher(m.name, m.op, pattern)
    return Matcher(m.name, "=" if m.op == "=~" else "!=", "")  # `^$`: the empty value


def _literal(pattern: str) -> str | None:
    """The fixed string `pattern` matches, when it has no regex in it (`foo`, `a\\.b`)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not nxt or not re.fullmatch(_PUNCT, nxt):
                return None  # `\d`, `\n`, a trailing `\`: not a plain literal
            out.append(nxt)
            i += 2
            continue
        if c in _META:
            return None
        out.append(c)
        i += 1
    return "".join(out) or None


def _show(m: Matcher) -> str:
    value = m.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{m.name}{m.op}"{value}"'
