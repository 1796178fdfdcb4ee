"""valuelabel: alert labels rendered from the query's value."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run, run_rules


def valuelabel(*rules: dict) -> list:
    return of(run_rules(*rules, checks=("valuelabel",)), "valuelabel")


def with_label(text: str) -> dict:
    return rule(labels={"severity": "critical", "team": "payments", "detail": text})


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("{{ $value }}", "$value"),
        ("{{ $value | humanize }}", "$value"),
        ("{{ humanizePercentage $value }}", "$value"),
        ('{{ printf "%.2f" $value }}', "$value"),
        ("{{- $value -}}", "$value"),
        ("{{ .Value }}", ".Value"),
        ("{{ $.Value }}", "$.Value"),
        ("{{ if gt $value 0.1 }}high{{ else }}low{{ end }}", "$value"),
        ("{{ if .Labels.instance }}{{ .Value }}{{ end }}", ".Value"),
    ],
)
def test_value_in_a_label_is_reported(text: str, shown: str) -> None:
    found = valuelabel(with_label(text))
    assert len(found) == 1, found
    assert found[0].severity is Severity.ERROR
    assert found[0].message.startswith("label 'detail' is rendered from the query's value")
    assert f"(`{shown}`)" in found[0].message
    assert "annotation" in found[0].hint


def test_finding_points_at_the_label_line() -> None:
    text = """
        groups:
          - name: checkout
            rules:
              - alert: CheckoutHighErrorRate
                expr: sum by (service) (rate(http_requests_total{status=~"5.."}[5m])) > 1
                labels:
                  severity: critical
                  errors: "{{ $value }}"
    """
    found = of(run(text, checks=("valuelabel",)), "valuelabel")
    assert [(f.line, f.rule) for f in found] == [(9, "CheckoutHighErrorRate")]


@pytest.mark.parametrize(
    "text",
    [
        "critical",
        "{{ $labels.instance }}",
        "{{ $labels.service }}-{{ $labels.namespace }}",
        '{{ index $labels "pod" }}',
        "{{ .Labels.job }}",
        "{{ $labels.Value }}",
        '{{ with query "up" }}{{ . | first | value }}{{ end }}',
        '{{ range query "up" }}{{ .Value }}{{ end }}',
        "$value",
        '{{ "$value" }}',
        "{{/* $value */}}payments",
        "{{ $value",  # does not parse: the syntax check reports it
    ],
)
def test_labels_that_do_not_read_the_value_are_clean(text: str) -> None:
    assert valuelabel(with_label(text)) == []


def test_value_in_annotations_is_fine() -> None:
    assert valuelabel(rule()) == []  # the summary uses $value


def test_recording_rules_are_not_checked() -> None:
    record = {
        "record": "job:http_requests:rate5m",
        "expr": "sum by (job) (rate(http_requests_total[5m]))",
        "labels": {"source": "{{ $value }}"},
    }
    assert valuelabel(record) == []
