"""for on rule shapes from real collections: event counters, look-backs and non-burn-rate
`and` conditions get no `for` advice; burn-rate alerts in workbook, sloth, pyrra and
kubernetes-mixin shapes are recognised, and broken ones reported once per problem."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules

TICKET = {"severity": "warning", "team": "t", "service": "checkout"}


def for_check(expr: str, for_: str | None = None, labels: dict | None = None) -> list:
    changes: dict = {"expr": expr, "for_": for_}
    if labels is not None:
        changes["labels"] = labels
    return of(run_rules(rule(**changes)), "for")


EVENTS = [
    'increase(kube_pod_container_status_restarts_total{namespace="prod"}[1d]) > 0',
    "sum by (job) (increase(velero_backup_failure_total[15m])) >= 1",
    "changes(process_start_time_seconds[1h]) > 0",
    "resets(node_boot_count_total[30m]) > 0",
    'rate(alertmanager_notifications_failed_total{integration="pagerduty"}[5m]) > 0',
]


@pytest.mark.parametrize("expr", EVENTS)
def test_event_alerts_get_no_for_advice(expr: str) -> None:
    assert for_check(expr) == []  # a page without for
    assert for_check(expr, "1m", TICKET) == []  # a for shorter than the window


@pytest.mark.parametrize(
    "expr",
    [
        'avg_over_time(probe_success{job="blackbox"}[1h]) < 0.75',
        "min_over_time(up[10m]) == 0",
        "max_over_time(pg_replication_lag[15m]) > 60",
        "quantile_over_time(0.9, node_load1[30m]) > 8",
        'sum(rate(http_requests_total{code=~"5.."}[10m])) / sum(rate(http_requests_total[10m]))'
        " > 0.05",
    ],
)
def test_conditions_that_already_look_back_need_no_for(expr: str) -> None:
    assert for_check(expr) == []


def test_look_back_windows_of_an_hour_or_more_are_not_compared_with_for() -> None:
    for window in ("1h", "6h", "1d"):
        expr = f"sum(rate(node_network_receive_errs_total[{window}])) > 10"
        assert for_check(expr, "5m", TICKET) == [], window


def test_irate_windows_are_not_compared_with_for() -> None:
    assert for_check("sum(irate(nginx_http_requests_total[5m])) > 1000", "1m", TICKET) == []


def test_short_rate_window_with_shorter_for_is_still_advice() -> None:
    (found,) = for_check("sum(rate(http_requests_total[5m])) < 1", "1m", TICKET)
    assert found.message == "for: 1m is shorter than the rate window [5m]"
    assert found.severity is Severity.INFO and found.policy


def test_page_on_a_level_without_for_is_still_advice() -> None:
    (found,) = for_check('up{job="checkout"} == 0')
    assert found.message.startswith("page alert without `for`")
    assert found.severity is Severity.INFO and found.policy


@pytest.mark.parametrize(
    "expr",
    [
        "min_over_time(kafka_consumergroup_lag[1h]) > 1000"
        " and delta(kafka_consumergroup_lag[10m]) > 0",
        "sum(rate(errors_total[5m])) > 10 and sum(rate(errors_total[1h])) > 5",
        "node_filesystem_avail_bytes / node_filesystem_size_bytes < 0.1"
        " and predict_linear(node_filesystem_avail_bytes[6h], 86400) < 0",
    ],
)
def test_thresholds_joined_by_and_are_not_burn_rate_alerts(expr: str) -> None:
    assert [f for f in for_check(expr, "10m") if "burn-rate" in f.message] == []


SLOTH = """(
  max(slo:sli_error:ratio_rate{s1}{{sloth_id="checkout"}} > (14.4 * 0.001)) without (sloth_window)
  and
  max(slo:sli_error:ratio_rate1h{{sloth_id="checkout"}} > (14.4 * 0.001)) without (sloth_window)
)
or
(
  max(slo:sli_error:ratio_rate30m{{sloth_id="checkout"}} > (6 * 0.001)) without (sloth_window)
  and
  max(slo:sli_error:ratio_rate6h{{sloth_id="checkout"}} > (6 * 0.001)) without (sloth_window)
)"""
PYRRA = (
    'http_requests:burnrate5m{slo="checkout"} > (14 * (1 - 0.99))'
    ' and http_requests:burnrate1h{slo="checkout"} > (14 * (1 - 0.99))'
    ' or http_requests:burnrate30m{slo="checkout"} > (7 * (1 - 0.99))'
    ' and http_requests:burnrate6h{slo="checkout"} > (7 * (1 - 0.99))'
)
MIXIN = (
    "sum by (cluster) (apiserver_request:burnrate1h) > (14.40 * 0.01000)"
    " and on (cluster) sum by (cluster) (apiserver_request:burnrate5m) > (14.40 * 0.01000)"
)


@pytest.mark.parametrize("expr", [SLOTH.format(s1="5m"), PYRRA, MIXIN])
def test_real_burn_rate_alerts_are_clean(expr: str) -> None:
    assert for_check(expr, "2m") == []
    assert for_check(expr) == []  # the short window is the guard: no `for` needed


def test_sloth_pair_off_the_twelve_to_one_ratio_is_reported() -> None:
    (found,) = for_check(SLOTH.format(s1="30m"), "2m")
    assert found.message.startswith("burn-rate pair 1h/30m is 2:1")
    assert found.severity is Severity.WARNING and not found.policy


def test_long_windows_without_short_ones_are_reported_once() -> None:
    expr = "slo:sli_error:ratio_rate1h > (14.4 * 0.001) or slo:sli_error:ratio_rate6h > (6 * 0.001)"
    (found,) = for_check(expr, "2m")
    assert found.message.startswith("burn-rate condition over 1h, 6h has no short window")


def test_the_two_sides_of_a_pair_with_different_factors_are_reported() -> None:
    expr = (
        "slo:sli_error:ratio_rate1h > (14.4 * 0.001) and slo:sli_error:ratio_rate5m > (6 * 0.001)"
    )
    (found,) = for_check(expr, "2m")
    assert "different factors (14.4 on 1h, 6 on 5m)" in found.message


def test_inverted_factors_are_reported() -> None:
    pair = (
        "(slo:sli_error:ratio_rate{l} > ({k} * 0.001)"
        " and slo:sli_error:ratio_rate{s} > ({k} * 0.001))"
    )
    expr = pair.format(l="6h", s="30m", k=14.4) + " or " + pair.format(l="1h", s="5m", k=6)
    (found,) = for_check(expr, "2m")
    assert (
        found.message
        == "burn-rate factors are inverted: the 6h pair burns at 14.4 but the 1h pair at 6"
    )
    assert found.severity is Severity.WARNING


def test_raw_error_ratio_pair_with_a_bad_short_window_is_reported_once() -> None:
    ratio = (
        'sum(rate(http_requests_total{{code=~"5.."}}[{w}])) / sum(rate(http_requests_total[{w}]))'
    )
    expr = " or ".join(
        f"({ratio.format(w=long)} > {k} * 0.001 and {ratio.format(w='20m')} > {k} * 0.001)"
        for long, k in (("1h", 14.4), ("6h", 6))
    )
    found = for_check(expr, "2m")
    messages = [f.message for f in found]
    assert len(messages) == len(set(messages)) == 2  # 1h/20m and 6h/20m, each once
    assert all("the short window should be about 1/12" in m for m in messages)
