"""for: pages wait before they fire; burn-rate alerts have the workbook's shape."""

from __future__ import annotations

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def for_check(*rules: dict) -> list:
    return of(run_rules(*rules), "for")


def burn(long: str, short: str, factor: float, op: str = "and") -> str:
    return (
        f"(slo:errors:ratio_rate{long} > ({factor} * 0.001) {op} "
        f"slo:errors:ratio_rate{short} > ({factor} * 0.001))"
    )


def test_page_without_for_is_reported() -> None:
    found = for_check(rule(for_=None))
    assert [f.message for f in found] == [
        "page alert without `for`: a single bad evaluation wakes someone up"
    ]


def test_ticket_without_for_is_fine() -> None:
    assert (
        for_check(
            rule(for_=None, labels={"severity": "warning", "team": "t", "service": "checkout"})
        )
        == []
    )


def test_for_shorter_than_the_rate_window_is_reported() -> None:
    found = for_check(rule(for_="1m"))
    assert [f.message for f in found] == ["for: 1m is shorter than the rate window [5m]"]


def test_for_as_long_as_the_window_is_fine() -> None:
    assert for_check(rule(for_="5m")) == []


def test_workbook_burn_rate_pairs_are_fine() -> None:
    expr = burn("1h", "5m", 14.4) + " or " + burn("6h", "30m", 6)
    assert for_check(rule(expr=expr, for_="2m")) == []
    assert for_check(rule(expr=expr, for_=None)) == []  # the short window is the guard


def test_windows_of_a_pair_joined_by_or_are_reported() -> None:
    found = for_check(rule(expr=burn("1h", "5m", 14.4, op="or")))
    assert len(found) == 1
    assert "joined by `or`: a short spike alone pages" in found[0].message


def test_pairs_joined_by_and_are_reported() -> None:
    expr = burn("1h", "5m", 14.4) + " and " + burn("6h", "30m", 6)
    found = for_check(rule(expr=expr))
    assert any("different factors (6, 14.4) are joined by `and`" in f.message for f in found)


def test_pair_far_from_twelve_to_one_is_reported() -> None:
    found = for_check(rule(expr=burn("1h", "30m", 14.4)))
    assert [f.message for f in found] == [
        "burn-rate pair 1h/30m is 2:1; the short window should be about 1/12 of the long one"
    ]


def test_workbook_factor_on_an_unusual_window_is_a_note() -> None:
    found = for_check(rule(expr=burn("6h", "30m", 14.4)))
    assert len(found) == 1
    assert found[0].severity is Severity.INFO
    assert "factor 14.4 goes with a 1h window" in found[0].message


def test_burn_rate_from_raw_rates_is_recognised() -> None:
    ratio = (
        'sum(rate(http_requests_total{{service="checkout",status=~"5.."}}[{w}]))'
        ' / sum(rate(http_requests_total{{service="checkout"}}[{w}]))'
    )
    expr = f"({ratio.format(w='1h')} > (14.4 * 0.001) and {ratio.format(w='5m')} > (14.4 * 0.001))"
    assert for_check(rule(expr=expr, for_="2m")) == []


# Shapes from real collections that the study found reported wrongly.
TICKET = {"severity": "warning", "team": "t", "service": "checkout"}


def test_event_counters_are_not_told_to_wait() -> None:
    for expr in (
        "increase(kube_pod_container_status_restarts_total[1d]) > 0",
        "sum by (job) (increase(backup_failures_total[15m])) >= 1",
        "changes(process_start_time_seconds[1h]) > 2",
        "resets(node_boot_count_total[30m]) > 0",
    ):
        assert for_check(rule(expr=expr, for_=None)) == [], expr
        assert for_check(rule(expr=expr, for_="1m", labels=TICKET)) == [], expr


def test_hour_long_look_back_windows_are_not_compared_with_for() -> None:
    expr = (
        'sum(rate(http_requests_total{code=~"5.."}[1h]))'
        " / sum(rate(http_requests_total[1h])) > 0.01"
    )
    assert for_check(rule(expr=expr, for_="5m")) == []


def test_conditions_that_already_average_need_no_for() -> None:
    for expr in (
        'avg_over_time(probe_success{job="blackbox"}[1h]) < 0.75',
        "min_over_time(up[10m]) == 0",
        'sum(rate(http_requests_total{status=~"5.."}[30m])) > 10',
    ):
        assert for_check(rule(expr=expr, for_=None)) == [], expr


def test_for_findings_are_policy_info() -> None:
    (found,) = for_check(rule(for_=None))
    assert found.severity == Severity.INFO and found.policy


def test_thresholds_joined_by_and_are_not_burn_rate_alerts() -> None:
    expr = (
        "min_over_time(kafka_consumergroup_lag[1h]) > 1000 "
        "and delta(kafka_consumergroup_lag[10m]) > 0"
    )
    assert for_check(rule(expr=expr, for_="10m")) == []


def test_a_wrong_burn_rate_alert_gets_each_message_once() -> None:
    expr = " or ".join(burn(w, w2, 14.4, "or") for w, w2 in (("1h", "5m"), ("6h", "30m")))
    found = for_check(rule(expr=expr, for_="2m"))
    messages = [f.message for f in found]
    assert messages and len(messages) == len(set(messages))
