"""dependency: a rule reads a recording rule that no linted rule records.

Why: a name shaped like a recording rule (`level:metric:operations`, with `:`) exists only if a
recording rule writes it. Read a misspelt or deleted one and the query returns nothing, without
an error: the alert can never fire, and a recording rule built on it records nothing. Names are
only known when the recording rules that write them are linted too, so a name is judged only
when the run records other names of its level (the part before the first `:`): an alerts file
linted alone, or one reading `slo:...` series another tool records in its own files, is not
reported. Each missing name is reported on the rule that reads it directly, with the closest
recorded name.

Bad:

    - record: job:http_requests:rate5m
      expr: sum by (job) (rate(http_requests_total[5m]))
    - alert: HighRequestRate
      expr: job:http_request:rate5m > 1000

Good:

    - record: job:http_requests:rate5m
      expr: sum by (job) (rate(http_requests_total[5m]))
    - alert: HighRequestRate
      expr: job:http_requests:rate5m > 1000
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "dependency"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_CACHE = "dependency.recorded"


def check(rule: Rule, ctx: Context) -> list[Finding]:
    q = rule.query
    if q is None:
        return []
    recorded, levels = _recorded(ctx)
    if not levels:
        return []  # no recording rule in the run: they are all elsewhere, nothing is known
    direct = {s.name for s in q.selectors if s.name}
    out: list[Finding] = []
    for name in ctx.expand(rule).unresolved:
        if name not in direct or name in recorded or _level(name) not in levels:
            continue  # a level the run records nothing of: recorded in files not linted
        close = difflib.get_close_matches(name, recorded, n=1, cutoff=0.8)
        hint = "lint it together with the file that records it, or fix the name"
        if close:
            hint = f"did you mean `{close[0]}`? Otherwise {hint}"
        what = "the alert" if rule.is_alert else "the recording rule"
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"`{name}` is not recorded by any rule in the linted files: {what} reads nothing",
                hint,
                rule.expr_line,
            )
        )
    return out


def _recorded(ctx: Context) -> tuple[frozenset[str], frozenset[str]]:
    """Every name the linted recording rules record (even one whose expression does not
    parse), and their levels."""
    got = ctx.cache.get(_CACHE)
    if got is None:
        names = frozenset(r.name for r in ctx.rules if r.is_record and r.name)
        got = ctx.cache[_CACHE] = (names, frozenset(_level(n) for n in names if ":" in n))
    return got


def _level(name: str) -> str:
    """`job` for `job:http_requests:rate5m`: the labels the recording rule aggregates by."""
    return name.split(":", 1)[0]
