"""syntax: the rule file must load in Prometheus.

Why: a file `promtool check rules` rejects is a file Prometheus refuses to load, and every alert in
it silently stops evaluating. This check reports what the loader found: YAML that does not parse,
unknown or duplicate fields, duplicate group names, a rule with both or neither of `alert` and
`record`, invalid recording-rule, label and annotation names, PromQL that does not parse,
`for`/`keep_firing_for` durations, and Go template syntax in labels and annotations.

Exactly as the Prometheus you run: regexps are checked with RE2 under Go's rules (`a++` and
`a{1001}` are refused, `\\Q.\\E` is fine), and functions, syntax and rule-group fields newer
than `--prometheus-version` (default 2.42) or behind a flag missing from `--enable-feature` are
errors (`limitk`, `sort_by_label`, `{"my.metric"}`, `query_offset`). Thanos' group field
`partial_response_strategy` is accepted with `--thanos` (or `thanos: true`).

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout"}[5m]) > 0.05
      for: 10minutes
      annotations:
        summary: "{{ $labels.service } errors"

Good:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 0.05
      for: 10m
      annotations:
        summary: "{{ $labels.service }} errors"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint import compat
from enricher.lint.model import Finding, Problem, Rule, RuleFile, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "syntax"
SEVERITY = Severity.ERROR
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False


def check_file(rf: RuleFile, ctx: Context) -> list[Finding]:
    hint = "promtool check rules rejects this file"
    return [
        Finding(
            rf.path,
            p.line,
            ID,
            SEVERITY if p.severity is None else p.severity,
            p.message,
            p.hint or hint,
        )
        for p in _applicable(rf.problems, ctx)
    ]


def check(rule: Rule, ctx: Context) -> list[Finding]:
    hint = "Prometheus will refuse to load this file"
    problems = _applicable(rule.problems, ctx)
    if rule.query is not None and (rule.query.features or rule.query.versioned):
        problems.extend(_versioned(rule, ctx))
    return [
        rule.finding(
            ID, SEVERITY if p.severity is None else p.severity, p.message, p.hint or hint, p.line
        )
        for p in problems
    ]


def _applicable(problems: list[Problem], ctx: Context) -> list[Problem]:
    """The loader's problems, less the group fields this Prometheus (or Thanos) accepts."""
    out = []
    cfg = ctx.config
    for p in problems:
        if p.code.startswith("group-field:"):
            key = p.code.split(":", 1)[1]
            if key in compat.THANOS_GROUP_FIELDS:
                if cfg.thanos:
                    continue
                p = Problem(p.line, p.message, "a Thanos rule file? lint it with --thanos")
            else:
                why = compat.unsupported(
                    compat.GROUP_FIELDS[key], cfg.prometheus_version, cfg.enable_features
                )
                if why is None:
                    continue
                p = Problem(p.line, p.message, f"`{key}` {why}{_against(ctx)}")
        out.append(p)
    return out


def _versioned(rule: Rule, ctx: Context) -> list[Problem]:
    q = rule.query
    assert q is not None
    cfg = ctx.config
    out = []
    for name in sorted(q.versioned):
        why = compat.unsupported(
            compat.FUNCTIONS[name], cfg.prometheus_version, cfg.enable_features
        )
        if why is not None:
            out.append(
                Problem(
                    rule.expr_line,
                    f'could not parse expression: unknown function with name "{name}"',
                    f"`{name}` {why}{_against(ctx)}",
                )
            )
    for key in sorted(q.features):
        what, since = compat.SYNTAX[key]
        why = compat.unsupported(since, cfg.prometheus_version, cfg.enable_features)
        if why is not None:
            out.append(
                Problem(
                    rule.expr_line,
                    f"could not parse expression: {what}",
                    f"this {why}{_against(ctx)}",
                )
            )
    return out


def _against(ctx: Context) -> str:
    version = compat.fmt(ctx.config.prometheus_version)
    return f" (linting for Prometheus {version}; see --prometheus-version and --enable-feature)"
