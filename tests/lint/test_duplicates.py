"""duplicates: one alert name and label set, defined once."""

from __future__ import annotations

from tests.lint.conftest import of, rule, rules_yaml, run, run_rules


def test_same_alert_and_labels_twice_is_reported() -> None:
    # The copy changes the threshold only: the same series, so the same alert. (This test used
    # `up == 0` as the copy, which outputs other labels than `by (service)`: not the same alert.)
    copy = rule(expr=rule()["expr"].replace("> 0.05", "> 0.02"))
    found = of(run(rules_yaml(rule(), copy)), "duplicates")
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


def test_copies_that_pin_different_values_of_a_kept_label_are_not_duplicates() -> None:
    copies = [
        rule(
            alert="ComponentDown",
            expr=f'up{{job="kube-{c}", component="{c}"}} == 0',
            labels={"severity": "critical", "team": "k8s", "service": "control-plane"},
        )
        for c in ("apiserver", "scheduler", "controller-manager")
    ]
    assert of(run_rules(*copies), "duplicates") == []


def test_same_alert_selecting_the_same_series_twice_is_still_a_duplicate() -> None:
    a = rule(expr='sum by (service) (rate(errors_total{service="checkout"}[5m])) > 1')
    b = rule(expr='sum by (service) (rate(errors_total{service="checkout"}[5m])) > 2')
    assert len(of(run_rules(a, b), "duplicates")) == 1


def test_a_pinned_label_that_is_aggregated_away_does_not_tell_copies_apart() -> None:
    a = rule(expr='sum(rate(errors_total{component="a"}[5m])) > 1')
    b = rule(expr='sum(rate(errors_total{component="b"}[5m])) > 1')
    assert len(of(run_rules(a, b), "duplicates")) == 1
