"""valuelabel: an alert's identity must not change with the value it alerts on.

Why: Prometheus identifies an alert by its labels, and renders the `labels:` templates on every
evaluation. A label built from the query's value (`{{ $value }}`, `{{ humanize $value }}`,
`{{ .Value }}`, or `{{ if gt $value 90.0 }}critical{{ end }}`) makes each new value, or each
crossing of the threshold in the template, a different alert: the old one resolves, the new one
starts pending again and must wait out `for` from zero, and Alertmanager sends a resolved and a
new notification (pint's alerts/template). The value belongs in an annotation, which can change
freely; `{{ $labels.X }}` in a label is fine, it is fixed for each series.

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum by (service) (rate(http_requests_total{status=~"5.."}[5m])) > 1
      labels:
        severity: critical
        errors_per_second: "{{ $value | humanize }}"

Good:

    - alert: CheckoutHighErrorRate
      expr: sum by (service) (rate(http_requests_total{status=~"5.."}[5m])) > 1
      labels:
        severity: critical
        service: "{{ $labels.service }}"
      annotations:
        summary: "{{ $labels.service }} answers {{ $value | humanize }} errors per second"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.templates import TemplateError, _actions

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "valuelabel"
SEVERITY = Severity.ERROR
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False

_REBINDS_DOT = frozenset(("with", "range", "define", "block"))


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert:
        return []
    out = []
    for name, text in rule.labels.items():
        used = _value_ref(text)
        if used is None:
            continue
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"label {name!r} is rendered from the query's value (`{used}`): every change "
                "of the rendered text makes a new alert, so the old one resolves and the new "
                "one waits out `for` again; Alertmanager sends a resolved and a new notification",
                "move the value to an annotation; for a severity that depends on the value, "
                "write one alert per threshold",
                rule.label_lines.get(name) or rule.keys.get("labels"),
            )
        )
    return out


def _value_ref(text: str) -> str | None:
    """How `text` reads the alert's value (`$value`, `.Value`, `$.Value`), or None."""
    if "{{" not in text or "alue" not in text:
        return None
    blocks: list[bool] = []  # per open block: whether it rebinds the dot
    try:
        for tokens in _actions(text):
            head = tokens[0].text if tokens and tokens[0].kind == "kw" else ""
            for i, t in enumerate(tokens):
                if t.kind == "var" and t.text == "$value":
                    return "$value"
                if t.kind != "field" or t.text != "Value":
                    continue
                prev = tokens[i - 1] if i else None
                if prev is not None and prev.end == t.start:
                    if prev.kind == "var" and prev.text == "$":
                        return "$.Value"
                    continue  # `$labels.Value`, `(query "x").Value`: not the alert's value
                if not any(blocks):
                    return ".Value"
            if head in ("if", "with", "range", "define", "block"):
                blocks.append(head in _REBINDS_DOT)
            elif head == "end" and blocks:
                blocks.pop()
    except TemplateError:
        return None  # the syntax check reports templates that do not parse
    return None
