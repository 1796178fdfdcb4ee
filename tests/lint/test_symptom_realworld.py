"""symptom on pages shaped like real collections (awesome-prometheus-alerts, kubernetes-mixin,
node-mixin, a company's own rules): cause-based pages are reported with the series that
decided; symptom pages and pages mixing a symptom with a cause are left alone."""

from __future__ import annotations

import pytest

from enricher.lint.checks.symptom import classify
from tests.lint.conftest import of, rule, run_rules

CAUSES = [
    ('mysql_up{job="mysql"} == 0', "scrape target down (mysql_up)"),
    ('absent(up{job="kube-apiserver"})', "scrape target down (up)"),
    ("time() - process_start_time_seconds < 300", "restarts (process_start_time_seconds)"),
    ("resets(process_start_time_seconds[30m]) > 1", "restarts (process_start_time_seconds)"),
    (
        'kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"} == 1',
        "kube_pod_container_status_waiting_reason",
    ),
    ('kube_pod_status_phase{phase=~"Pending|Unknown"} > 0', "kube_pod_status_phase"),
    (
        "kube_statefulset_status_replicas_ready != kube_statefulset_status_replicas",
        "kube_statefulset_status_replicas_ready",
    ),
    ("kube_daemonset_status_number_unavailable > 0", "kube_daemonset_status_number_unavailable"),
    (
        'kube_node_status_condition{condition="Ready",status="true"} == 0',
        "kube_node_status_condition",
    ),
    ("kube_job_status_failed > 0", "kube_job_status_failed"),
    (
        "kube_horizontalpodautoscaler_status_current_replicas"
        " >= kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
    ),
    ("redis_connected_slaves < 1", "replication lag (redis_connected_slaves)"),
    ("kafka_server_replicamanager_underreplicatedpartitions > 0", "replication lag"),
    ("x509_cert_not_after - time() < 7 * 86400", "certificate expiry (x509_cert_not_after)"),
    (
        "time() - kube_cronjob_status_last_schedule_time > 3600",
        "job or backup staleness (kube_cronjob_status_last_schedule_time)",
    ),
    (
        "sum by (pod) (rate(container_cpu_cfs_throttled_periods_total[5m]))"
        " / sum by (pod) (rate(container_cpu_cfs_periods_total[5m])) > 0.25",
        "resource over requests or limits (container_cpu_cfs_throttled_periods_total)",
    ),
    (
        "pg_stat_activity_count / pg_settings_max_connections > 0.8",
        "connections (pg_settings_max_connections)",
    ),
    ('node_systemd_unit_state{state="failed"} == 1', "host state (node_systemd_unit_state)"),
    (
        "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.1",
        "memory (node_memory_MemAvailable_bytes, node_memory_MemTotal_bytes)",
    ),
    ('elasticsearch_cluster_health_status{color="red"} == 1', "component health"),
    ("nginx_ingress_controller_config_last_reload_successful == 0", "config reload failed"),
    ("nodeCpuUsage > 0.9", "CPU (nodeCpuUsage)"),  # camelCase names are split too
]
SYMPTOMS = [
    'probe_success{job="blackbox"} == 0',
    'probe_http_status_code{job="blackbox"} >= 500',
    'sum(rate(http_server_requests_seconds_count{status=~"5.."}[5m])) > 1',
    "sum(rate(nginx_ingress_controller_requests[5m])) < 1",  # traffic drop
    "apiserver_request:burnrate1h > (14.4 * 0.01) and apiserver_request:burnrate5m > (14.4 * 0.01)",
    "apdex_score < 0.8",
    # a symptom guarded by a cause is still a symptom page
    'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05'
    ' and on() up{job="api"} == 1',
]


@pytest.mark.parametrize(("expr", "reason"), CAUSES)
def test_cause_pages_name_the_series_that_decided(expr: str, reason: str) -> None:
    (found,) = of(run_rules(rule(expr=expr)), "symptom")
    assert found.message.startswith("page alert watches a cause")
    assert reason in found.message


@pytest.mark.parametrize("expr", SYMPTOMS)
def test_symptom_pages_are_not_reported(expr: str) -> None:
    assert of(run_rules(rule(expr=expr)), "symptom") == []


def test_every_cause_is_named_once_per_kind() -> None:
    expr = "pg_up == 0 or increase(kube_pod_container_status_restarts_total[10m]) > 3"
    (found,) = of(run_rules(rule(expr=expr)), "symptom")
    assert found.message.endswith(
        "scrape target down (pg_up); restarts (kube_pod_container_status_restarts_total)"
    )


@pytest.mark.parametrize(
    "name",
    ["syslog_ng_dropped_messages_total", "kube_pod_container_resource_requests", "sysrpsd_load"],
)
def test_tokens_not_substrings(name: str) -> None:
    # `slo` in syslog, `request` in resource_requests, `rps` in sysrpsd: none is a symptom
    assert classify(name)[0] != "symptom"


def test_ticket_severity_causes_are_fine() -> None:
    ticket = {"severity": "warning", "team": "db", "service": "postgres"}
    assert of(run_rules(rule(expr="pg_up == 0", labels=ticket)), "symptom") == []
