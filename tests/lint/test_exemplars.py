"""exemplars: pages built on series that can lead to a trace."""

from __future__ import annotations

from enricher.lint.config import Config
from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules

SUMMARY_P99 = 'http_request_duration_seconds{service="checkout",quantile="0.99"} > 0.5'
HISTOGRAM_P99 = (
    "histogram_quantile(0.99, sum by (le, service) ("
    'rate(http_request_duration_seconds_bucket{service="checkout"}[5m]))) > 0.5'
)


def exemplars(*rules: dict, config: Config | None = None) -> list:
    return of(run_rules(*rules, config=config), "exemplars")


def test_latency_page_on_summary_quantiles_is_reported() -> None:
    found = exemplars(rule(expr=SUMMARY_P99))
    assert len(found) == 1
    assert "summary quantiles" in found[0].message
    assert "cannot follow it to a trace" in found[0].message


def test_latency_page_on_histogram_buckets_is_fine() -> None:
    assert exemplars(rule(expr=HISTOGRAM_P99)) == []


def test_latency_page_on_native_histogram_is_fine() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (service) ("
        'rate(http_request_duration_seconds{service="checkout"}[5m]))) > 0.5'
    )
    assert exemplars(rule(expr=expr)) == []


def test_latency_page_on_a_gauge_is_reported() -> None:
    found = exemplars(rule(expr='checkout_latency_p99_seconds{service="checkout"} > 0.5'))
    assert len(found) == 1 and "gauge" in found[0].message


def test_average_latency_from_sum_and_count_is_a_note() -> None:
    expr = (
        'sum(rate(http_request_duration_seconds_sum{service="checkout"}[5m]))'
        ' / sum(rate(http_request_duration_seconds_count{service="checkout"}[5m])) > 0.3'
    )
    found = exemplars(rule(expr=expr))
    assert len(found) == 1 and found[0].severity is Severity.INFO


def test_error_rate_page_on_counters_is_fine() -> None:
    assert exemplars(rule()) == []


def test_error_rate_page_on_a_gauge_is_reported() -> None:
    found = exemplars(rule(expr='http_requests_error_ratio{service="checkout"} > 0.05'))
    assert len(found) == 1 and "error-rate alert reads gauge" in found[0].message


def test_hardware_error_gauge_is_not_a_request_error_rate() -> None:
    assert exemplars(rule(expr="node_filesystem_device_error == 1")) == []


def test_recorded_quantile_is_followed_back_to_the_histogram() -> None:
    record = {
        "record": "service:http_request_duration_seconds:p99",
        "expr": "histogram_quantile(0.99, sum by (le, service) ("
        "rate(http_request_duration_seconds_bucket[5m])))",
    }
    alert = rule(expr='service:http_request_duration_seconds:p99{service="checkout"} > 0.5')
    assert exemplars(record, alert) == []


def test_recorded_summary_is_followed_back_and_reported() -> None:
    record = {
        "record": "service:latency:p99",
        "expr": 'max by (service) (rpc_latency_seconds{quantile="0.99"})',
    }
    alert = rule(expr='service:latency:p99{service="checkout"} > 0.5')
    found = exemplars(record, alert)
    assert len(found) == 1 and "summary quantiles" in found[0].message


def test_ticket_alerts_are_skipped_unless_configured() -> None:
    ticket = rule(
        expr=SUMMARY_P99, labels={"severity": "warning", "team": "p", "service": "checkout"}
    )
    assert exemplars(ticket) == []
    cfg = Config(checks={"exemplars": {"only_pages": False}})
    assert len(exemplars(ticket, config=cfg)) == 1


def test_error_ratio_over_a_histograms_count_is_not_a_latency_average() -> None:
    expr = (
        'sum by (service) (rate(http_request_duration_seconds_count{service="checkout",'
        'code=~"5.."}[5m]))\n/\nsum by (service) (rate(http_request_duration_seconds_count'
        '{service="checkout"}[5m])) > 0.05'
    )
    assert of(run_rules(rule(expr=expr)), "exemplars") == []
    traffic = 'sum(rate(grpc_server_handling_seconds_count{grpc_service="cart"}[10m])) < 1'
    assert of(run_rules(rule(expr=traffic)), "exemplars") == []


def test_sum_over_count_of_one_histogram_is_still_a_latency_average() -> None:
    expr = (
        "sum(rate(http_request_duration_seconds_sum[5m]))\n/\n"
        "sum(rate(http_request_duration_seconds_count[5m])) > 0.5"
    )
    (found,) = of(run_rules(rule(expr=expr)), "exemplars")
    assert "averages" in found.message
