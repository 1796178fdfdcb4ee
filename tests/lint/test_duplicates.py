"""duplicates: one alert name and label set, defined once."""

from __future__ import annotations

from tests.lint.conftest import of, rule, rules_yaml, run


def test_same_alert_and_labels_twice_is_reported() -> None:
    found = of(run(rules_yaml(rule(), rule(expr="up == 0"))), "duplicates")
    assert len(found) == 1
    assert found[0].message.startswith(
        "alert CheckoutHighErrorRate with the same labels is already defined at rules.yml:"
    )


def test_same_alert_with_different_severity_is_fine() -> None:
    warning = rule(labels={"severity": "warning", "team": "payments", "service": "checkout"})
    assert of(run(rules_yaml(rule(), warning)), "duplicates") == []


def test_recording_rule_recorded_from_several_selectors_is_fine() -> None:
    a = {"record": "job:up:sum", "expr": 'sum(up{job="a"})'}
    b = {"record": "job:up:sum", "expr": 'sum(up{job="b"})'}
    assert of(run(rules_yaml(a, b)), "duplicates") == []
    assert len(of(run(rules_yaml(a, dict(a))), "duplicates")) == 1
