"""vectormatching: binary operations whose sides can never pair up."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def vectormatching(expr: str) -> list:
    return of(run_rules(rule(expr=expr), checks=("vectormatching",)), "vectormatching")


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        (
            "sum by (job) (rate(http_requests_total{code=~'5..'}[5m]))"
            " / on(instance) sum by (instance) (rate(http_requests_total[5m])) > 0.05",
            "`on(instance)`: the right side always has `instance` but the left side can only "
            "have `job`",
        ),
        (
            'sum by (job) (rate(http_requests_total[5m])) / on(instance) up{instance="db-1:9100"}',
            "`on(instance)`: the right side always has `instance`",
        ),
        (
            "sum by (job) (rate(errors_total[5m])) / sum by (instance) (rate(requests_total[5m]))"
            " > 0.05",
            "the left side always has `job` but the right side can only have `instance`",
        ),
        (
            "sum by (service) (rate(errors_total[5m])) / sum(rate(requests_total[5m])) > 0.05",
            "the left side always has `service` but the right side has no labels",
        ),
        (
            'node_filesystem_avail_bytes{mountpoint="/"} / sum(node_filesystem_size_bytes) < 0.1',
            "the left side always has `mountpoint` but the right side has no labels",
        ),
        (
            "sum by (service, code) (rate(http_requests_total[5m]))"
            " / ignoring(code) group_left sum by (instance) (rate(http_requests_total[5m])) > 0.1",
            "`ignoring(code)`: the left side always has `service`",
        ),
        (
            "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))"
            ' * on(namespace, pod) group_left(node) kube_pod_info{pod="api-0"} > 1',
            "the right side always has `pod` but the left side can only have `namespace`",
        ),
        (
            'rate(http_requests_total{job="api"}[5m]) / rate(http_requests_total{job="web"}[5m])'
            " > 2",
            'the left side has job="api" and the right side job="web"',
        ),
        (
            "sum by (job) (up) == 0 and on(instance) sum by (instance) (node_load1 > 5)",
            "`on(instance)`",
        ),
        (
            "sum by (job) (rate(http_requests_total[5m])) + vector(0) > 1",
            "the right side has no labels",
        ),
        (
            "sum(pg_locks_count) / (pg_settings_max_locks_per_transaction"
            " * pg_settings_max_connections) > 0.20",
            "the right side reads scraped series, which always carry `job`, but the left side "
            "has no labels",
        ),
        (
            'sum by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))'
            " / rate(node_cpu_seconds_total[5m]) < 0.1",
            "which always carry `job`, but the left side can only have `instance`",
        ),
        (
            "sum without (instance) (rate(http_requests_total[5m]))"
            " / on(instance) sum by (instance) (rate(http_requests_total[5m])) > 1",
            "the right side always has `instance` but the left side drops `instance`",
        ),
    ],
)
def test_sides_that_can_never_match_are_reported(expr: str, says: str) -> None:
    found = vectormatching(expr)
    assert len(found) == 1, found
    assert found[0].severity is Severity.ERROR
    assert says in found[0].message
    assert "no series pair up" in found[0].message


@pytest.mark.parametrize(
    "expr",
    [
        "sum by (job) (rate(a_total[5m])) / on(job) sum by (job) (rate(b_total[5m])) > 1",
        "sum by (job) (rate(a_total[5m])) / sum by (job) (rate(b_total[5m])) > 1",
        "sum(rate(errors_total[5m])) / sum(rate(requests_total[5m])) > 0.05",
        "sum(rate(errors_total[5m])) / on(instance) sum(rate(requests_total[5m])) > 0.05",
        "sum by (job) (a_total) / on(job, instance) sum by (job) (b_total) > 1",
        # a side whose labels the query does not pin is never judged
        "sum by (job) (rate(a_total[5m])) / on(instance) rate(b_total[5m]) > 1",
        "rate(errors_total{code=~'5..'}[5m]) / ignoring(code) group_left rate(requests_total[5m])"
        " > 0.1",
        "sum by (service, code) (rate(http_requests_total[5m]))"
        " / ignoring(code) group_left sum by (service) (rate(http_requests_total[5m])) > 0.1",
        "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m]))"
        " * on(namespace, pod) group_left(node) kube_pod_info > 1",
        'kube_pod_container_resource_requests{resource="cpu"}'
        ' * on(namespace, pod) group_left(node) kube_pod_info{node!=""} > 4',
        'up{job="node"} * on(instance) group_left(nodename) node_uname_info == 0',
        'up{job="api"} / ignoring(job) up{job="web"} > 1',
        'up{job="api"} == 0 and on(instance) up{job="node"} == 1',
        'up{job="api"} == 0 and on(job) absent(foo{job="api"})',
        "sum by (job) (up) == 0 unless on(instance) sum by (instance) (node_load1)",
        "sum by (job) (up) == 0 or on(instance) sum by (instance) (node_load1)",
        "(sum by (job) (rate(a_total[5m])) or vector(0)) > 1",
        "sum by (job) (rate(a_total[5m])) > scalar(sum(rate(a_total[5m])))",
        "sum by (job) (rate(a_total[5m])) > 5",
        "count(up) < 3",
        'node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes < 0.1',
        'label_replace(sum by (job) (a_total), "instance", "$1", "job", "(.*)")'
        " / on(instance) sum by (instance) (b_total) > 1",
        # label_replace() with an empty replacement deletes the label it names
        'label_replace(sum by (job, pod) (a_total), "pod", "", "", "") / sum by (job) (b_total)'
        " > 1",
        "sum without (instance) (rate(a_total[5m])) / sum without (instance) (rate(b_total[5m]))"
        " > 1",
        "histogram_quantile(0.99, sum by (le, job) (rate(x_bucket[5m])))"
        " > on(job) group_left sum by (job) (slo_latency_seconds)",
        # kubernetes-mixin (kube-prometheus) alerts
        'kube_resourcequota{job="kube-state-metrics", type="used"}'
        ' / ignoring(instance, job, type) (kube_resourcequota{job="kube-state-metrics",'
        ' type="hard"} > 0) > 0.9 < 1',
        'apiserver_client_certificate_expiration_seconds_count{job="apiserver"} > 0'
        " and on(job) histogram_quantile(0.01, sum by (job, le) (rate("
        'apiserver_client_certificate_expiration_seconds_bucket{job="apiserver"}[5m])))'
        " < 604800",
        'count by (cluster, node) ((kube_pod_status_phase{phase="Running"} == 1)'
        " * on(instance, pod, namespace, cluster) group_left(node)"
        " topk by (instance, pod, namespace, cluster) (1, kube_pod_info))"
        ' / max by (cluster, node) (kube_node_status_capacity{resource="pods"} != 1) > 0.95',
        'sum by (cluster, eviction_signal, instance) (rate(kubelet_evictions{job="kubelet"}[15m]))'
        " * on(cluster, instance) group_left(node)"
        ' max by (cluster, instance, node) (kubelet_node_name{job="kubelet"}) > 0',
        # awesome-prometheus-alerts host rules
        "(sum by (instance) (rate(node_disk_written_bytes_total[2m])) / 1024 / 1024 > 50)"
        ' * on(instance) group_left(nodename) node_uname_info{nodename=~".+"}',
    ],
)
def test_sides_that_can_match_are_not_reported(expr: str) -> None:
    assert vectormatching(expr) == []


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(errors_total[5m])) / job:requests:rate5m > 0.05",
        "sum(rate(errors_total[5m])) / requests_rate5m > 0.05",  # recorded below, no labels
        "count(up == 0) / count(up) > 0.1",
        "sum(rate(a_total[5m])) / sum without (job, instance) (rate(b_total[5m])) > 1",
        'sum(rate(a_total[5m])) / label_replace(rate(b_total[5m]), "job", "", "", "") > 1',
        "sum by (instance) (rate(a_total[5m])) / ignoring(job) rate(b_total[5m]) > 1",
    ],
)
def test_sides_not_known_to_carry_job_are_not_reported(expr: str) -> None:
    record = {"record": "requests_rate5m", "expr": "sum(rate(requests_total[5m]))"}
    found = run_rules(record, rule(expr=expr), checks=("vectormatching",))
    assert of(found, "vectormatching") == []


def test_good_alert_is_clean() -> None:
    assert of(run_rules(rule(), checks=("vectormatching",)), "vectormatching") == []
