"""symptom: page-severity alerts watch what users feel."""

from __future__ import annotations

import pytest

from tests.lint.conftest import of, rule, run_rules

TICKET = {"severity": "warning", "team": "payments", "service": "checkout"}


def symptom(*rules: dict) -> list[str]:
    return [f.message for f in of(run_rules(*rules), "symptom")]


@pytest.mark.parametrize(
    ("expr", "cause"),
    [
        ('sum(rate(container_cpu_usage_seconds_total{namespace="checkout"}[5m])) > 4', "CPU"),
        ('container_memory_working_set_bytes{namespace="checkout"} > 1e9', "memory"),
        ('node_filesystem_avail_bytes{mountpoint="/"} < 1e9', "disk"),
        ('up{job="checkout"} == 0', "scrape target down"),
        ("increase(kube_pod_container_status_restarts_total[15m]) > 3", "restarts"),
        ("checkout_queue_length > 100", "queue length"),
        ("node_filesystem_device_error == 1", "disk"),
    ],
)
def test_cause_at_page_severity_is_reported_with_the_reason(expr: str, cause: str) -> None:
    found = symptom(rule(expr=expr))
    assert len(found) == 1
    assert found[0].startswith("page-severity alert watches a cause, not a symptom users feel")
    assert cause in found[0]


def test_cause_at_ticket_severity_is_fine() -> None:
    assert symptom(rule(expr="sum(rate(process_cpu_seconds_total[5m])) > 4", labels=TICKET)) == []


@pytest.mark.parametrize(
    "expr",
    [
        'sum(rate(http_requests_total{service="checkout",status=~"5.."}[5m])) > 1',
        "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m]))) > 1",
        'probe_success{job="blackbox"} == 0',
        'sum(rate(grpc_server_handled_total{grpc_code="Unavailable"}[5m])) > 1',
    ],
)
def test_symptoms_at_page_severity_are_fine(expr: str) -> None:
    assert symptom(rule(expr=expr)) == []


def test_recording_rules_are_followed_to_the_raw_metric() -> None:
    record = {
        "record": "service:cpu:rate5m",
        "expr": "sum by (service) (rate(container_cpu_usage_seconds_total[5m]))",
    }
    found = symptom(record, rule(expr='service:cpu:rate5m{service="checkout"} > 4'))
    assert len(found) == 1 and "container_cpu_usage_seconds_total" in found[0]
