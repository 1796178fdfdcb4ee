"""Helpers for the lint tests: lint a YAML text in-process and pick findings apart."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from enricher.lint.config import Config
from enricher.lint.engine import lint
from enricher.lint.loader import Inputs, load_text
from enricher.lint.model import Finding

GOOD_ALERT: dict[str, Any] = {
    "alert": "CheckoutHighErrorRate",
    "expr": (
        'sum by (service) (rate(http_requests_total{service="checkout",status=~"5.."}[5m]))\n'
        '/\nsum by (service) (rate(http_requests_total{service="checkout"}[5m])) > 0.05\n'
    ),
    "for": "10m",
    "labels": {"severity": "critical", "team": "payments", "service": "checkout"},
    "annotations": {
        "summary": "{{ $labels.service }} answers {{ $value | humanizePercentage }} with 5xx",
        "runbook_url": "https://runbooks.example.com/payments/checkout-5xx",
        "dashboard_url": "https://grafana.example.com/d/http?var-service={{ $labels.service }}",
    },
}


def rule(**changes: Any) -> dict[str, Any]:
    """GOOD_ALERT with fields replaced; a value of None removes the field. `for_` means `for`."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD_ALERT.items()}
    for key, value in changes.items():
        key = "for" if key == "for_" else key
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def rules_yaml(*rules: dict[str, Any], group: str = "checkout") -> str:
    return yaml.safe_dump({"groups": [{"name": group, "rules": list(rules)}]}, sort_keys=False)


def run(
    text: str,
    *,
    path: str = "rules.yml",
    config: Config | None = None,
    checks: tuple[str, ...] = (),
    prometheus: Any = None,
) -> list[Finding]:
    """Lint one file's text (dedented) and return the findings."""
    rf, directives = load_text(path, textwrap.dedent(text))
    assert rf is not None
    inputs = Inputs(files=[rf], directives={path: directives} if directives else {})
    cfg = config or Config()
    if checks:
        cfg.enable = frozenset(checks)
    return lint(inputs, cfg, prometheus)


def run_rules(*rules: dict[str, Any], **kwargs: Any) -> list[Finding]:
    return run(rules_yaml(*rules), **kwargs)


def of(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


@pytest.fixture
def good_alert() -> dict[str, Any]:
    return rule()
