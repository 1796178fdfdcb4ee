"""annotations: the page tells the on-call engineer what broke and where to start.

Policy: missing annotations, index-page runbooks and unscoped dashboards are house policy
(info by default); a template label that renders empty is a bug (error).

Why: the first minutes of an incident go to finding the runbook and the right dashboard. An
alert needs a `summary`; a page also needs a `runbook_url` that is a real URL specific to this
alert (not a wiki's front page) and a `dashboard_url` scoped to the service (it names the
service, or fills it in with `{{ $labels.service }}`). Templates may only use labels the query
keeps: after `sum by (service)`, `$labels.instance` renders as an empty string (pint's
alerts/template). Labels set under the rule's `labels:` are not visible to templates either.

Bad:

    - alert: CheckoutHighErrorRate
      expr: sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels: {severity: critical, team: payments, service: checkout}
      annotations:
        summary: "5xx on {{ $labels.instance }}"
        runbook_url: "https://runbooks.example.com/"
        dashboard_url: "https://grafana.example.com/d/all-services"

Good:

    - alert: CheckoutHighErrorRate
      expr: sum by (service) (rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1
      labels: {severity: critical, team: payments, service: checkout}
      annotations:
        summary: "{{ $labels.service }} is answering with 5xx"
        runbook_url: "https://runbooks.example.com/payments/checkout-5xx"
        dashboard_url: "https://grafana.example.com/d/http?var-service={{ $labels.service }}"
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from enricher.lint.model import Finding, Rule, Severity
from enricher.lint.templates import parse_template

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "annotations"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {
    "required": ["summary"],
    "required_on_page": ["runbook_url", "dashboard_url"],
}
NEEDS_PROMETHEUS = False

_ACTION = re.compile(r"\{\{.*?\}\}", re.S)
_SPACE = re.compile(r"\s")
_INDEX_PAGES = frozenset(
    [
        "index",
        "index.html",
        "index.htm",
        "index.php",
        "readme",
        "readme.md",
        "home",
        "start",
        "wiki",
        "docs",
        "runbooks",
        "runbook",
        "playbooks",
        "playbook",
        "alerts",
        "main",
        "default.aspx",
    ]
)


def check(rule: Rule, ctx: Context) -> list[Finding]:
    if not rule.is_alert or rule.query is None:
        return []
    out: list[Finding] = []
    required = list(ctx.config.option(ID, "required", OPTIONS["required"]))
    if ctx.is_page(rule):
        required += ctx.config.option(ID, "required_on_page", OPTIONS["required_on_page"])
    missing = [
        name for name in dict.fromkeys(required) if not rule.annotations.get(name, "").strip()
    ]
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        out.append(
            rule.finding(
                ID,
                SEVERITY,
                f"alert has no {names} annotation" + ("s" if len(missing) > 1 else ""),
                "a page should say what is wrong and link the runbook and the service's dashboard",
                rule.keys.get("annotations"),
                policy=True,
            )
        )
    runbook = rule.annotations.get("runbook_url", "").strip()
    if runbook:
        out.extend(_runbook(rule, runbook))
    dashboard = rule.annotations.get("dashboard_url", "").strip()
    if dashboard:
        out.extend(_dashboard(rule, dashboard))
    out.extend(_template_labels(rule))
    return out


@lru_cache(maxsize=4096)
def _split(text: str) -> SplitResult | None:
    """`text` as URL parts (templated parts stand in as a placeholder); None if not a URL."""
    probe = _ACTION.sub("TEMPLATE", text)
    parts = urlsplit(probe)
    if parts.scheme in ("http", "https") and parts.netloc and not _SPACE.search(probe):
        return parts
    return None


def _url(rule: Rule, key: str, text: str) -> tuple[Finding | None, SplitResult | None]:
    if text.startswith("{{"):
        return None, None  # e.g. `{{ $externalURL }}/...`: cannot judge offline
    parts = _split(text)
    if parts is not None:
        return None, parts
    return (
        rule.finding(
            ID,
            SEVERITY,
            f"{key} is not an http(s) URL: {text!r}",
            "chat tools and pagers only link absolute http(s) URLs",
            rule.annotation_lines.get(key),
        ),
        None,
    )


def _runbook(rule: Rule, text: str) -> list[Finding]:
    bad, parts = _url(rule, "runbook_url", text)
    if bad is not None:
        return [bad]
    if parts is None or "{{" in text or parts.query or parts.fragment:
        return []
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        why = "is a bare domain"
    elif segments[-1].lower() in _INDEX_PAGES:
        why = "points at an index page"
    else:
        return []
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"runbook_url {why} ({text}), not a runbook for {rule.name}",
            "link the page that says what to check and do for this alert",
            rule.annotation_lines.get("runbook_url"),
            policy=True,
        )
    ]


def _dashboard(rule: Rule, text: str) -> list[Finding]:
    bad, _ = _url(rule, "dashboard_url", text)
    if bad is not None:
        return [bad]
    if "service" in parse_template(text).label_refs:
        return []
    service = rule.labels.get("service")
    if (not service or "{{" in service) and rule.query is not None:
        service = next((s for sel in rule.query.selectors if (s := sel.equal("service"))), None)
    if not service or "{{" in service or service.lower() in text.lower():
        return []
    return [
        rule.finding(
            ID,
            SEVERITY,
            f"dashboard_url does not name service {service!r}: {text}",
            "scope it to the service, e.g. ?var-service={{ $labels.service }}, "
            "so the first click shows the right graphs",
            rule.annotation_lines.get("dashboard_url"),
            policy=True,
        )
    ]


def _template_labels(rule: Rule) -> list[Finding]:
    assert rule.query is not None
    labels = rule.query.labels
    out = []
    for kind, values, lines in (
        ("label", rule.labels, rule.label_lines),
        ("annotation", rule.annotations, rule.annotation_lines),
    ):
        for key, value in values.items():
            t = parse_template(value)
            if t.error:
                continue
            for ref in t.label_refs:
                if ref in t.guarded or ref == "alertname" or labels.may_have(ref):
                    continue  # alertname: Prometheus versions differ, do not guess
                if labels.only is not None:
                    kept = ", ".join(f"`{x}`" for x in sorted(labels.only)) or "no labels"
                    why = f"the query only keeps {kept}"
                else:
                    why = f"the query removes `{ref}`"
                hint = "add it to the aggregation's by(...) clause or drop it from the template"
                if ref in rule.labels:
                    hint = (
                        f"`{ref}` is set under labels:, but templates only see the query's "
                        "labels; write the value out or keep it in by(...)"
                    )
                out.append(
                    rule.finding(
                        ID,
                        Severity.ERROR,
                        f"{kind} {key!r} uses `$labels.{ref}`, but {why}: it renders empty",
                        hint,
                        lines.get(key),
                    )
                )
    return out
