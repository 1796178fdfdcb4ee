"""impossible: comparisons that no value of the query can satisfy."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def impossible(expr: str, **changes: object) -> list:
    return of(run_rules(rule(expr=expr, **changes), checks=("impossible",)), "impossible")


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('count(up{job="payments-api"}) == 0', "count() is at least 1"),
        ('count(up{job="payments-api"} == 1) < 1', "count() is at least 1"),
        ("count by (namespace) (kube_pod_info) <= 0", "count() is at least 1"),
        ('count_over_time(up{job="api"}[10m]) == 0', "count_over_time() is at least 1"),
        ("rate(http_requests_total[5m]) < 0", "rate() is never negative"),
        ("0 > rate(http_requests_total[5m])", "rate() is never negative"),
        ("sum by (service) (rate(http_requests_total[5m])) <= -1", "rate() is never negative"),
        ("increase(process_cpu_seconds_total[1h]) == -1", "increase() is never negative"),
        ("changes(kube_pod_container_status_restarts_total[1h]) < 0", "changes() is never"),
        ('absent(up{job="api"}) > 1', "absent() returns 1 or nothing"),
        ('absent(up{job="api"}) == 0', "absent() returns 1 or nothing"),
        ('absent_over_time(up{job="api"}[10m]) != 1', "absent_over_time() returns 1"),
        ("up == 2", "`up` is 1 or 0"),
        ("up < 0", "`up` is 1 or 0"),
        ('max_over_time(up{job="api"}[10m]) > 1', "`up` is 1 or 0"),
        ("vector(1) > 2", "vector(1) is always 1"),
        ("group(up) == 0", "group() is always 1"),
    ],
)
def test_values_the_expression_cannot_take_are_reported(expr: str, why: str) -> None:
    found = impossible(expr)
    assert len(found) == 1, found
    assert found[0].severity is Severity.ERROR
    assert "can never be true" in found[0].message
    assert why in found[0].message
    assert found[0].message.endswith("so the alert never fires")


@pytest.mark.parametrize(
    ("expr", "shown"),
    [
        ("node_load1 == 0 > 0", "`... > 0`"),
        ("node_load1 > 5 < 3", "`... < 3`"),
        ("rate(http_requests_total[5m]) < 5 > 10", "`... > 10`"),
        ("(node_load1 > bool 5) == 2", "`... == 2`"),
    ],
)
def test_a_comparison_contradicting_an_earlier_one_is_reported(expr: str, shown: str) -> None:
    found = impossible(expr)
    assert len(found) == 1, found
    assert found[0].message.startswith(f"{shown} can never be true")


def test_comparing_with_nan_is_reported() -> None:
    found = impossible("node_load1 == NaN")
    assert len(found) == 1
    assert "comparing with NaN is never true" in found[0].message
    assert impossible("node_load1 != NaN") == []


def test_count_hint_points_at_absent() -> None:
    found = impossible('count(up{job="payments-api"}) == 0')
    assert "absent(" in found[0].hint


def test_dead_branch_is_reported_without_claiming_the_alert_never_fires() -> None:
    found = impossible('count(up{job="api"}) == 0 or absent(up{job="api"})')
    assert len(found) == 1
    assert "count() is at least 1" in found[0].message
    assert "never fires" not in found[0].message


def test_recording_rules_are_checked_too() -> None:
    record = {"record": "job:errors:negative", "expr": "sum(rate(errors_total[5m])) < 0"}
    found = of(run_rules(record, checks=("impossible",)), "impossible")
    assert len(found) == 1
    assert found[0].message.endswith("so the rule records nothing")


@pytest.mark.parametrize(
    "expr",
    [
        "up == 0",
        "up{job='node'} < 1",
        "avg_over_time(up[10m]) < 0.9",
        "count(up) < 3",
        'count(up{job="api"} == 1) < 2',
        '(count(up{job="api"}) or vector(0)) == 0',
        'absent(up{job="api"} == 1)',
        'absent(up{job="api"}) == 1',
        "sum by (job) (up) == 0",
        "rate(http_requests_total[5m]) == 0",
        "rate(http_requests_total[5m]) * 60 > 100",
        "delta(node_filesystem_avail_bytes[1h]) < 0",
        "deriv(node_filesystem_avail_bytes[6h]) < 0",
        "predict_linear(node_filesystem_avail_bytes[6h], 4 * 3600) < 0",
        "node_load1 - 5 < 0",
        "node_hwmon_temp_celsius < -10",
        "node_load1 > 5 < 10",
        "changes(kube_pod_container_status_restarts_total[1h]) > 3",
        "vector(1)",
        "vector(1) > 0",
        "time() - node_boot_time_seconds < 600",
        "(node_load1 > bool 5) == 1",
        "node_load1 != NaN",
        "-rate(http_requests_total[5m]) < 0",
    ],
)
def test_realistic_conditions_are_not_reported(expr: str) -> None:
    assert impossible(expr) == []


def test_good_alert_is_clean() -> None:
    assert of(run_rules(rule(), checks=("impossible",)), "impossible") == []
