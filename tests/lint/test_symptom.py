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
        ("checkout_queue_length > 100", "queue or consumer lag"),
        ("node_filesystem_device_error == 1", "disk"),
    ],
)
def test_cause_at_page_severity_is_reported_with_the_reason(expr: str, cause: str) -> None:
    found = symptom(rule(expr=expr))
    assert len(found) == 1
    assert found[0].startswith("page alert watches a cause, not a symptom users feel")
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


# Cause-based pages of the kinds the study's company labelled "cause", which the old
# vocabulary missed, and symptom pages it must keep leaving alone.
CAUSE_PAGES = [
    ("pg_up == 0", "pg_up"),
    ('redis_up{job="redis"} == 0', "redis_up"),
    ("changes(process_start_time_seconds[10m]) > 2", "process_start_time_seconds"),
    (
        "increase(kube_pod_container_status_restarts_total[15m]) > 3",
        "kube_pod_container_status_restarts_total",
    ),
    (
        "kube_deployment_spec_replicas != kube_deployment_status_replicas_available",
        "kube_deployment_status_replicas_available",
    ),
    ('kube_pod_status_ready{condition="false"} == 1', "kube_pod_status_ready"),
    ("pg_replication_lag > 30", "pg_replication_lag"),
    ("mysql_slave_status_seconds_behind_master > 60", "mysql_slave_status_seconds_behind_master"),
    ("probe_ssl_earliest_cert_expiry - time() < 86400 * 7", "probe_ssl_earliest_cert_expiry"),
    ("time() - backup_last_success_timestamp_seconds > 86400", "backup_last_success_timestamp"),
    (
        "sum by (pod) (container_memory_working_set_bytes) / sum by (pod) "
        "(kube_pod_container_resource_limits) > 0.9",
        "kube_pod_container_resource_limits",
    ),
    ("sum(kafka_consumergroup_lag) by (consumergroup) > 10000", "kafka_consumergroup_lag"),
    ("etcd_server_has_leader == 0", "etcd_server_has_leader"),
    # `slo` inside `syslog` once made this a symptom
    ("sum(rate(syslog_ng_dropped_messages_total[5m])) > 0", "syslog_ng_dropped_messages_total"),
]
SYMPTOM_PAGES = [
    'avg_over_time(probe_success{job="blackbox"}[10m]) < 0.9',
    "histogram_quantile(0.99, sum by (le) "
    "(rate(apiserver_request_duration_seconds_bucket[5m]))) > 1",
    "slo:sli_error:ratio_rate1h > 14.4 * 0.001",
    'sum(rate(nginx_ingress_controller_requests{status=~"5.."}[5m])) > 1',
    'sum(rate(grpc_server_handled_total{grpc_code!="OK"}[5m])) > 1',
]


@pytest.mark.parametrize(("expr", "series"), CAUSE_PAGES)
def test_cause_pages_from_real_collections_are_reported(expr: str, series: str) -> None:
    (found,) = of(run_rules(rule(expr=expr)), "symptom")
    assert series in found.message


@pytest.mark.parametrize("expr", SYMPTOM_PAGES)
def test_symptom_pages_are_left_alone(expr: str) -> None:
    assert of(run_rules(rule(expr=expr)), "symptom") == []


def test_tokens_not_substrings_decide() -> None:
    # `request` inside kube_pod_container_resource_requests is not a request rate
    expr = "sum(kube_pod_container_resource_requests{resource='cpu'}) > 100".replace("'", '"')
    (found,) = of(run_rules(rule(expr=expr)), "symptom")
    assert "resource over requests or limits" in found.message
