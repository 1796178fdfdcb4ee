"""duplicates on rule shapes from real collections: copies per component, per job, per
`by` label set are different series; identical copies are still reported."""

from __future__ import annotations

import textwrap
import time

import yaml

from enricher.lint.checks import Context, duplicates
from enricher.lint.config import Config
from enricher.lint.engine import lint
from enricher.lint.loader import Inputs, load_text
from enricher.lint.model import Finding
from tests.lint.conftest import of, run

CRIT = {"severity": "critical"}


def doc(*groups: tuple[str, list[dict]]) -> str:
    return yaml.safe_dump(
        {"groups": [{"name": n, "rules": rules} for n, rules in groups]}, sort_keys=False
    )


def dups(*groups: tuple[str, list[dict]]) -> list[Finding]:
    return of(run(doc(*groups), checks=("duplicates",)), "duplicates")


def dups_in_files(files: dict[str, str]) -> list[Finding]:
    loaded = [load_text(path, textwrap.dedent(text))[0] for path, text in files.items()]
    cfg = Config()
    cfg.enable = frozenset(("duplicates",))
    return of(lint(Inputs(files=[f for f in loaded if f is not None]), cfg), "duplicates")


def test_one_alert_per_control_plane_component_is_not_62_duplicates() -> None:
    # The study's worst case: one alert copied per component, each pinning `component`.
    copies = [
        {
            "alert": "KubeComponentDown",
            "expr": f'up{{job="kube-components", component="component-{i}"}} == 0',
            "for": "15m",
            "labels": CRIT,
        }
        for i in range(62)
    ]
    assert dups(("kube-components", copies)) == []


def test_component_pinned_in_a_ratio_that_keeps_it_is_not_a_duplicate() -> None:
    expr = (
        'sum by (component) (rate(apiserver_request_total{{component="{c}",code=~"5.."}}[5m]))'
        ' / sum by (component) (rate(apiserver_request_total{{component="{c}"}}[5m])) > 0.05'
    )
    rules = [
        {"alert": "ComponentErrors", "expr": expr.format(c=c), "labels": CRIT}
        for c in ("apiserver", "scheduler")
    ]
    assert dups(("components", rules)) == []


def test_alerts_aggregated_by_different_labels_are_different_alerts() -> None:
    a = {
        "alert": "KubeQuotaAlmostFull",
        "expr": "sum by (namespace) (kube_resourcequota{type='used'}) > 100",
        "labels": {"severity": "warning"},
    }
    b = dict(a, expr="sum by (namespace, resource) (kube_resourcequota{type='used'}) > 100")
    assert dups(("quota", [a, b])) == []


def test_recording_rules_with_different_by_sets_are_different_series() -> None:
    rules = [
        {"record": "cluster:cpu_usage:rate5m", "expr": f"sum by ({by}) (rate(x_total[5m]))"}
        for by in ("cluster", "cluster, namespace")
    ]
    assert dups(("rec", rules)) == []


def test_label_replace_copies_are_different_alerts() -> None:
    rules = [
        {
            "alert": "EndpointDown",
            "expr": f'label_replace(probe_success{{instance="{u}"}} == 0, "site", "{s}", "", "")',
            "labels": CRIT,
        }
        for u, s in (("https://a.example.com", "a"), ("https://b.example.com", "b"))
    ]
    # the instance differs too, but label_replace alone would tell them apart
    assert dups(("probes", rules)) == []


def test_per_job_copies_in_different_groups_select_disjoint_series() -> None:
    # kube-prometheus style: the same alert once per job, in each job's own group; `job` is
    # aggregated away, but the copies read disjoint series.
    def target_down(job: str) -> dict:
        return {
            "alert": "TargetDown",
            "expr": f'100 * (count by (namespace) (up{{job="{job}"}} == 0) / count by '
            f'(namespace) (up{{job="{job}"}})) > 10',
            "labels": {"severity": "warning"},
        }

    assert (
        dups(("node-exporter", [target_down("node")]), ("kubelet", [target_down("kubelet")])) == []
    )


def test_different_metrics_in_different_files_are_not_duplicates() -> None:
    postgres = doc(("postgres", [{"alert": "ExporterDown", "expr": "pg_up == 0", "labels": CRIT}]))
    redis = doc(("redis", [{"alert": "ExporterDown", "expr": "redis_up == 0", "labels": CRIT}]))
    assert dups_in_files({"rules/postgres.yml": postgres, "rules/redis.yml": redis}) == []


def test_identical_alert_in_two_files_is_a_duplicate() -> None:
    rule = {
        "alert": "HostOutOfMemory",
        "expr": "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100 < 10",
        "for": "2m",
        "labels": {"severity": "warning"},
    }
    found = dups_in_files(
        {"rules/node.yml": doc(("node", [rule])), "rules/host.yml": doc(("host", [rule]))}
    )
    assert len(found) == 1
    assert "is already defined at rules/node.yml:" in found[0].message


def test_identical_alert_in_two_groups_is_a_duplicate() -> None:
    rule = {"alert": "RedisDown", "expr": 'redis_up{job="redis"} == 0', "labels": CRIT}
    assert len(dups(("redis", [rule]), ("redis-copy", [dict(rule)]))) == 1


def test_same_series_with_another_threshold_in_another_group_is_a_duplicate() -> None:
    a = {"alert": "PgDown", "expr": 'pg_up{job="pg"} == 0', "labels": CRIT}
    b = dict(a, expr='pg_up{job="pg"} < 1')
    assert len(dups(("a", [a]), ("b", [b]))) == 1


def test_same_alert_in_different_directories_is_not_compared() -> None:
    text = doc(("g", [{"alert": "RedisDown", "expr": "redis_up == 0", "labels": CRIT}]))
    assert dups_in_files({"prod/redis.yml": text, "staging/redis.yml": text}) == []


def test_identical_recording_rule_twice_is_a_duplicate() -> None:
    rec = {"record": "job:http_requests:rate5m", "expr": "sum by (job) (rate(x_total[5m]))"}
    assert len(dups(("a", [rec]), ("b", [dict(rec)]))) == 1


def test_five_thousand_rules_are_indexed_in_well_under_a_second() -> None:
    rules = []
    for i in range(2500):
        rules.append(
            {
                "alert": "ComponentDown",  # one bucket of 2,500 copies: the worst case
                "expr": f'sum by (component) (up{{component="c{i}"}}) == 0',
                "labels": CRIT,
            }
        )
        rules.append({"alert": f"Other{i}", "expr": f'up{{job="j{i}"}} == 0', "labels": CRIT})
    rf, _ = load_text("rules.yml", doc(("big", rules)))
    assert rf is not None
    ctx = Context(Config(), rf.rules)
    start = time.perf_counter()
    found = [f for r in rf.rules for f in duplicates.check(r, ctx)]
    assert time.perf_counter() - start < 0.5
    assert found == []
