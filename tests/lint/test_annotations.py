"""annotations: summary, a specific runbook, a service-scoped dashboard, templates that render."""

from __future__ import annotations

from typing import Any

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import GOOD_ALERT, of, rule, run_rules


def annotations(**changes: Any) -> list[str]:
    return [f.message for f in of(run_rules(rule(**changes)), "annotations")]


def with_annotations(**values: str | None) -> dict[str, Any]:
    merged = {**GOOD_ALERT["annotations"], **values}
    return rule(annotations={k: v for k, v in merged.items() if v is not None})


def messages(r: dict[str, Any]) -> list[str]:
    return [f.message for f in of(run_rules(r), "annotations")]


def test_good_annotations_are_clean() -> None:
    assert annotations() == []


def test_page_without_summary_runbook_and_dashboard_is_reported() -> None:
    assert annotations(annotations={"description": "x"}) == [
        "alert has no `summary`, `runbook_url`, `dashboard_url` annotations"
    ]


def test_ticket_alert_only_needs_a_summary() -> None:
    ticket = {"severity": "warning", "team": "payments", "service": "checkout"}
    assert annotations(labels=ticket, annotations={"summary": "x"}) == []


def test_runbook_that_is_not_a_url_is_reported() -> None:
    assert messages(with_annotations(runbook_url="see the wiki")) == [
        "runbook_url is not an http(s) URL: 'see the wiki'"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://runbooks.example.com",
        "https://runbooks.example.com/",
        "https://wiki.example.com/runbooks/",
        "https://wiki.example.com/ops/index.html",
        "https://github.com/org/runbooks/blob/main/README.md",
    ],
)
def test_runbook_that_is_a_bare_domain_or_index_page_is_reported(url: str) -> None:
    found = messages(with_annotations(runbook_url=url))
    assert len(found) == 1 and found[0].startswith("runbook_url ")
    assert "not a runbook for CheckoutHighErrorRate" in found[0]


@pytest.mark.parametrize(
    "url",
    [
        "https://runbooks.example.com/payments/checkout-5xx",
        "https://wiki.example.com/runbooks/#CheckoutHighErrorRate",
        "https://runbooks.example.com/alerts?name=CheckoutHighErrorRate",
        "https://runbooks.example.com/{{ $labels.alertname }}",
        "{{ $externalURL }}/runbooks/checkout",
    ],
)
def test_specific_runbooks_are_accepted(url: str) -> None:
    assert messages(with_annotations(runbook_url=url)) == []


def test_dashboard_not_scoped_to_the_service_is_reported() -> None:
    found = messages(with_annotations(dashboard_url="https://grafana.example.com/d/all-services"))
    assert found == [
        "dashboard_url does not name service 'checkout': https://grafana.example.com/d/all-services"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://grafana.example.com/d/abc/checkout-overview",
        "https://grafana.example.com/d/abc?var-service={{ $labels.service }}",
        "https://grafana.example.com/d/abc?var-service={{ .Labels.service }}",
    ],
)
def test_dashboards_naming_the_service_are_accepted(url: str) -> None:
    assert messages(with_annotations(dashboard_url=url)) == []


def test_template_using_a_label_the_aggregation_removes_is_an_error() -> None:
    findings = of(
        run_rules(with_annotations(summary="5xx on {{ $labels.instance }}")),
        "annotations",
    )
    assert len(findings) == 1
    f = findings[0]
    assert f.severity is Severity.ERROR
    assert f.message == (
        "annotation 'summary' uses `$labels.instance`, but the query only keeps `service`: "
        "it renders empty"
    )


def test_template_using_a_rule_label_is_explained() -> None:
    r = with_annotations(summary="owned by {{ $labels.team }}")
    findings = of(run_rules(r), "annotations")
    assert len(findings) == 1
    assert "templates only see the query's labels" in findings[0].hint


def test_template_label_guarded_by_if_is_accepted() -> None:
    r = with_annotations(summary="{{ if $labels.instance }}on {{ $labels.instance }}{{ end }}")
    assert messages(r) == []


def test_template_labels_of_an_unaggregated_query_are_accepted() -> None:
    r = rule(
        expr='rate(http_requests_total{service="checkout",status=~"5.."}[5m]) > 1',
        annotations={**GOOD_ALERT["annotations"], "summary": "{{ $labels.instance }}"},
    )
    assert messages(r) == []


def test_labels_dropped_by_on_matching_are_reported() -> None:
    r = rule(
        expr=(
            'sum by (service, instance) (rate(http_requests_total{service="checkout"}[5m]))'
            " / on (service) group_left sum by (service) (rate(x_total[5m])) > 1"
        ),
        annotations={**GOOD_ALERT["annotations"], "summary": "{{ $labels.instance }}"},
    )
    assert messages(r) == []  # group_left keeps every left-hand label
    r["expr"] = (
        'sum by (service, instance) (rate(http_requests_total{service="checkout"}[5m]))'
        " / on (service) sum by (service) (rate(x_total[5m])) > 1"
    )
    assert [m.split(":")[0] for m in messages(r)] == [
        "annotation 'summary' uses `$labels.instance`, but the query only keeps `service`"
    ]
