"""counter: raw counter values compared or computed with, without rate() or increase()."""

from __future__ import annotations

import pytest

from enricher.lint.model import Finding, Severity
from tests.lint.conftest import of, rule, run_rules


def counter(*rules: dict) -> list[Finding]:
    return of(run_rules(*rules, checks=("counter",)), "counter")


def alert(expr: str) -> list[Finding]:
    return counter(rule(expr=expr))


def test_raw_restart_counter_in_a_comparison_is_reported() -> None:
    found = alert("kube_pod_container_status_restarts_total > 5")
    assert len(found) == 1
    assert found[0].severity is Severity.WARNING
    assert "kube_pod_container_status_restarts_total" in found[0].message
    assert "increase(kube_pod_container_status_restarts_total[1h])" in found[0].hint


def test_raw_counter_compared_to_zero_is_reported() -> None:
    assert len(alert('node_network_receive_errs_total{device="eth0"} == 0')) == 1


def test_sum_of_raw_counters_is_reported() -> None:
    assert len(alert("sum by (job) (http_requests_total) > 1000")) == 1


def test_quantile_over_raw_buckets_is_reported() -> None:
    expr = "histogram_quantile(0.99, sum by (le) (http_request_duration_seconds_bucket)) > 0.5"
    found = alert(expr)
    assert len(found) == 1 and "_bucket" in found[0].message


def test_lifetime_average_from_sum_and_count_is_reported() -> None:
    expr = "http_request_duration_seconds_sum / http_request_duration_seconds_count > 0.3"
    assert len(alert(expr)) == 2


def test_raw_counter_next_to_a_rated_one_is_reported() -> None:
    expr = 'rate(http_requests_total{code=~"5.."}[5m]) / http_requests_total > 0.05'
    found = alert(expr)
    assert len(found) == 1


def test_raw_counter_compared_to_zero_as_a_whole_alert_is_reported() -> None:
    # not a guard: nothing follows it, so the alert fires forever after the first error
    assert len(alert("backup_failures_total > 0")) == 1


def test_recording_rule_summing_raw_counters_is_reported() -> None:
    record = {"record": "job:http_requests:sum", "expr": "sum by (job) (http_requests_total)"}
    assert len(counter(record)) == 1


def test_count_of_a_gauge_named_count_is_not_a_counter() -> None:
    # postgres_exporter and kafka_exporter gauges end in _count and _sum
    assert alert('sum by (datname) (pg_stat_activity_count{state="active"}) > 100') == []
    assert alert("sum by (consumergroup) (kafka_consumergroup_lag_sum) > 1000") == []


def test_count_is_a_counter_when_its_histogram_is_linted() -> None:
    rated = rule(
        alert="Slow",
        expr="histogram_quantile(0.9, sum by (le) (rate(grpc_handled_bucket[5m]))) > 1",
    )
    raw = rule(alert="Traffic", expr="sum(grpc_handled_count) > 10")
    assert [f.rule for f in counter(rated, raw)] == ["Traffic"]


@pytest.mark.parametrize(
    "expr",
    [
        'absent(up{job="x"})',
        'absent(http_requests_total{job="checkout"})',
        "increase(kube_pod_container_status_restarts_total[1h]) > 0",
        "sum(rate(http_requests_total[5m])) by (job) > 100",
        'rate(node_cpu_seconds_total{mode="idle"}[5m]) < 0.1',
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m]))) > 1",
        "count(node_cpu_seconds_total) by (instance) < 2",
        "count(http_requests_total) by (job) > 0",
        "group by (job) (http_requests_total) unless on (job) up",
        "http_requests_total unless on (job) up",
        'rate(x_total[5m]) > 0 and on (job) process_start_time_seconds{job="api"}',
        "rate(a_total[5m]) > 1 or b_total",
        "time() - timestamp(backup_runs_total) > 86400",
        "changes(kube_pod_container_status_restarts_total[15m]) > 2",
        "max_over_time(http_requests_total[1h]) > 0",
        "resets(process_cpu_seconds_total[1h]) > 3",
        "rate(max by (job) (http_requests_total)[5m:1m]) > 1",
        "job:http_requests_total:rate5m > 10",
        "kube_deployment_status_replicas_available < 1",
        'probe_success{job="blackbox"} == 0',
        'label_replace(http_requests_total, "svc", "$1", "job", "(.*)") unless up',
        # awesome-prometheus-alerts: a hand-made increase over 10m
        "(kube_pod_container_status_restarts_total"
        " - kube_pod_container_status_restarts_total offset 10m >= 1)"
        " and ignoring (reason)"
        ' min_over_time(kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}[10m])'
        " == 1",
        # kubernetes-mixin: `_count > 0` guards that anything was observed
        'apiserver_client_certificate_expiration_seconds_count{job="apiserver"} > 0'
        " and on (job) histogram_quantile(0.01, sum by (job, le) (rate("
        'apiserver_client_certificate_expiration_seconds_bucket{job="apiserver"}[5m])))'
        " < 604800",
    ],
)
def test_realistic_counter_uses_are_fine(expr: str) -> None:
    assert alert(expr) == []


def test_counter_recorded_in_the_linted_files_is_not_raw() -> None:
    record = {"record": "http_requests_total", "expr": "sum(rate(http_requests_raw[5m]))"}
    assert counter(record, rule(expr="http_requests_total > 10")) == []


def test_default_alert_is_fine() -> None:
    assert counter(rule()) == []
