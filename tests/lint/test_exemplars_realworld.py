"""exemplars on rule shapes from real collections: error ratios and traffic over a
histogram's `_count` are not latency averages; runtime and probe timings have no trace."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def exemplars(expr: str) -> list:
    return of(run_rules(rule(expr=expr)), "exemplars")


# The study's false positives: error ratios and request rates built on `_count`.
NOT_LATENCY = [
    'sum by (job) (rate(http_request_duration_seconds_count{job="api",code=~"5.."}[5m]))'
    ' / sum by (job) (rate(http_request_duration_seconds_count{job="api"}[5m])) > 0.05',
    'sum(rate(http_server_requests_seconds_count{outcome="SERVER_ERROR"}[5m]))'
    " / sum(rate(http_server_requests_seconds_count[5m])) > 0.01",
    'sum(rate(grpc_server_handling_seconds_count{grpc_code!="OK"}[5m]))'
    " / sum(rate(grpc_server_handling_seconds_count[5m])) > 0.05",
    'sum(rate(nginx_ingress_controller_request_duration_seconds_count{status=~"5.."}[5m])) > 1',
    "sum(rate(http_request_duration_seconds_count[10m])) < 1",
]
# Timings with no request behind them: no histogram would give them a trace.
NOT_REQUESTS = [
    'go_gc_duration_seconds{quantile="1"} > 1',
    'prometheus_rule_evaluation_duration_seconds{quantile="0.99"} > 60',
    'etcd_disk_wal_fsync_duration_seconds{quantile="0.99"} > 0.5',
    "probe_duration_seconds > 5",
    'probe_http_duration_seconds{phase="processing"} > 1',
    "scrape_duration_seconds > 10",
    "time() - backup_last_success_timestamp_seconds > 86400",
    "mysql_slave_status_seconds_behind_master > 60",
    "pg_stat_activity_max_tx_duration > 60",
    "node_filesystem_device_error == 1",
]


@pytest.mark.parametrize("expr", NOT_LATENCY)
def test_ratios_and_rates_over_a_histograms_count_are_not_reported(expr: str) -> None:
    assert exemplars(expr) == []


@pytest.mark.parametrize("expr", NOT_REQUESTS)
def test_timings_without_a_request_behind_them_are_not_reported(expr: str) -> None:
    assert exemplars(expr) == []


@pytest.mark.parametrize(
    ("expr", "average"),
    [
        (
            "sum(rate(http_request_duration_seconds_sum[5m]))"
            " / sum(rate(http_request_duration_seconds_count[5m])) > 0.5",
            "http_request_duration_seconds_sum / http_request_duration_seconds_count",
        ),
        (  # Spring Boot / Micrometer names have no "duration" in them
            'rate(http_server_requests_seconds_sum{uri="/checkout"}[5m])'
            ' / rate(http_server_requests_seconds_count{uri="/checkout"}[5m]) > 1',
            "http_server_requests_seconds_sum / http_server_requests_seconds_count",
        ),
    ],
)
def test_sum_over_count_of_one_request_histogram_is_a_latency_average(
    expr: str, average: str
) -> None:
    (found,) = exemplars(expr)
    assert found.severity is Severity.INFO and average in found.message


@pytest.mark.parametrize(
    ("expr", "what"),
    [
        ('rpc_durations_seconds{service="cart",quantile="0.99"} > 1', "summary quantiles"),
        ('http_request_duration_seconds{handler="/api",quantile="0.9"} > 2', "summary quantiles"),
        ("nginx_upstream_response_time_seconds > 1", "gauge(s)"),
        ("api_response_time_ms > 500", "gauge(s)"),
        ('http_requests_error_ratio{service="cart"} > 0.05', "error-rate alert reads gauge"),
    ],
)
def test_request_latency_without_exemplars_is_still_reported(expr: str, what: str) -> None:
    (found,) = exemplars(expr)
    assert what in found.message and found.severity is Severity.WARNING
