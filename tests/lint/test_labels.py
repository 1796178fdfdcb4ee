"""labels: severity, team and service on every alert, and a service label that is true."""

from __future__ import annotations

from enricher.lint.config import Config
from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def labels(*rules: dict, config: Config | None = None) -> list[str]:
    return [f.message for f in of(run_rules(*rules, config=config), "labels")]


def test_alert_with_owner_labels_is_clean() -> None:
    assert labels(rule()) == []


def test_missing_team_and_service_are_reported() -> None:
    found = labels(rule(labels={"severity": "critical"}, expr="sum(rate(x_total[5m])) > 1"))
    assert found == ["alert has no `team`, `service` labels"]


def test_service_kept_by_the_query_counts_as_present() -> None:
    # `sum by (service)` keeps the label on every alert, so the rule need not set it.
    assert labels(rule(labels={"severity": "critical", "team": "payments"})) == []


def test_service_matcher_removed_by_aggregation_does_not_count() -> None:
    found = labels(
        rule(
            labels={"severity": "critical", "team": "payments"},
            expr='sum(rate(http_requests_total{service="checkout"}[5m])) > 1',
        )
    )
    assert found == ["alert has no `service` label"]


def test_severity_outside_the_allowed_set_is_reported() -> None:
    found = labels(rule(labels={"severity": "sev1", "team": "t", "service": "checkout"}))
    assert found == ["severity `sev1` is not one of critical, warning, info"]


def test_required_labels_and_severities_are_configurable() -> None:
    cfg = Config(checks={"labels": {"required": ["severity", "owner"], "severities": ["sev1"]}})
    found = labels(rule(labels={"severity": "sev1", "service": "checkout"}), config=cfg)
    assert found == ["alert has no `owner` label"]


def test_service_label_disagreeing_with_the_matcher_is_an_error() -> None:
    findings = of(
        run_rules(rule(labels={"severity": "critical", "team": "p", "service": "payments"})),
        "labels",
    )
    assert len(findings) == 1
    assert findings[0].severity is Severity.ERROR
    assert 'selects service="checkout"' in findings[0].message


def test_service_label_matching_a_regex_matcher_agrees() -> None:
    assert (
        labels(rule(expr='sum by (service) (rate(x_total{service=~"checkout|cart"}[5m])) > 1'))
        == []
    )


def test_recording_rules_are_not_checked() -> None:
    assert labels({"record": "job:x:rate5m", "expr": "sum(rate(x_total[5m]))"}) == []
