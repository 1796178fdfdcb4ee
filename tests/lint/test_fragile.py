"""fragile: alerts whose series are picked by topk()/bottomk() on each evaluation."""

from __future__ import annotations

import pytest

from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def fragile(*rules: dict) -> list:
    return of(run_rules(*rules, checks=("fragile",)), "fragile")


@pytest.mark.parametrize(
    ("expr", "op"),
    [
        ("topk(10, node_load1 > 0)", "topk"),
        ("topk(3, sum by (instance) (rate(node_network_receive_bytes_total[5m]))) > 1e8", "topk"),
        ("bottomk(1, node_filesystem_avail_bytes) < 1e9", "bottomk"),
        ("topk by (cluster) (1, sum by (cluster, node) (node_load1)) > 5", "topk"),
        ("sort_desc(topk(5, node_load1)) > 1", "topk"),
        ('label_replace(topk(5, node_load1), "host", "$1", "instance", "(.*)") > 1', "topk"),
        ("topk(1, node_load1) * on(instance) group_left(nodename) node_uname_info > 5", "topk"),
        ("node_load1 / on(instance) topk(3, node_cpu_count) > 2", "topk"),
        ("topk(5, node_load1) > 1 and on(instance) up == 1", "topk"),
        ("node_load1 > 10 or topk(10, node_load5) > 5", "topk"),
        (
            'topk(1, npm_controller_pod_exec_time{operation="create",quantile="0.5"}) > 100.0',
            "topk",
        ),
    ],
)
def test_sampled_alert_series_are_reported(expr: str, op: str) -> None:
    found = fragile(rule(expr=expr))
    assert len(found) == 1, found
    assert found[0].severity is Severity.WARNING
    assert f"picked by {op}()" in found[0].message


def test_both_samplers_are_named_once() -> None:
    found = fragile(rule(expr="topk(3, node_load1) > 5 or bottomk(3, node_load1) < 0.1"))
    assert len(found) == 1
    assert "topk()/bottomk()" in found[0].message


@pytest.mark.parametrize(
    "expr",
    [
        "count(topk(3, node_load1 > 5)) > 2",
        "max by (cluster) (topk(3, node_load1)) > 5",
        "node_load1 > scalar(topk(1, node_load15))",
        "node_load1 > 5 and on(instance) topk(10, node_load15)",
        "node_load1 > 5 unless on(instance) bottomk(3, node_load15)",
        "topk(1, sum(rate(http_requests_total[5m]))) > 100",
        "topk by (job) (1, sum by (job) (rate(http_requests_total[5m]))) > 100",
        # kube-state-metrics de-duplication on the "one" side of a join
        "(kube_pod_container_status_waiting == 1) * on(namespace, pod) group_left(owner_kind)"
        " topk by (namespace, pod) (1, kube_pod_owner) > 0",
        "max_over_time(topk(1, node_load1)[10m:1m]) > 5",
        "absent(topk(1, node_load1))",
        "max by (instance) (node_load1) > 5",
        # kubernetes-mixin KubePodNotReady: the topk only de-duplicates kube_pod_owner
        "sum by (namespace, pod) (max by (namespace, pod) (kube_pod_status_phase{phase=~"
        '"Pending|Unknown"}) * on(namespace, pod) group_left(owner_kind) topk by (namespace, pod)'
        ' (1, max by (namespace, pod, owner_kind) (kube_pod_owner{owner_kind!="Job"}))) > 0',
    ],
)
def test_samplers_that_do_not_name_the_alerts_are_not_reported(expr: str) -> None:
    assert fragile(rule(expr=expr)) == []


def test_recording_rules_may_use_topk() -> None:
    record = {
        "record": "instance:node_network_receive_bytes:top10",
        "expr": "topk(10, sum by (instance) (rate(node_network_receive_bytes_total[5m])))",
    }
    assert fragile(record) == []


def test_good_alert_is_clean() -> None:
    assert fragile(rule()) == []
