"""dependency: recording-rule names read but recorded by no linted rule."""

from __future__ import annotations

from typing import Any

from enricher.lint.model import Finding, Severity
from tests.lint.conftest import of, rule, rules_yaml, run, run_rules

RATE = {
    "record": "job:http_requests:rate5m",
    "expr": "sum by (job) (rate(http_requests_total[5m]))",
}


def dependency(*rules: dict[str, Any]) -> list[Finding]:
    return of(run_rules(*rules, checks=("dependency",)), "dependency")


def test_misspelt_recording_rule_is_reported_with_a_suggestion() -> None:
    found = dependency(RATE, rule(expr="job:http_request:rate5m > 1000"))
    assert len(found) == 1
    f = found[0]
    assert f.severity is Severity.WARNING and f.rule == "CheckoutHighErrorRate"
    assert "`job:http_request:rate5m` is not recorded" in f.message
    assert "the alert reads nothing" in f.message
    assert "did you mean `job:http_requests:rate5m`" in f.hint


def test_unknown_name_without_a_close_match_keeps_the_plain_hint() -> None:
    found = dependency(RATE, rule(expr="job:node_cpu:ratio_rate5m > 0.9"))
    assert len(found) == 1
    assert found[0].hint == "lint it together with the file that records it, or fix the name"


def test_a_level_the_run_records_nothing_of_is_recorded_elsewhere() -> None:
    # SLO series (sloth, pyrra) and cluster-level rules often live in their own files
    alerts = [
        rule(alert="A", expr='slo:sli_error:ratio_rate5m{sloth_service="checkout"} > 0.01'),
        rule(alert="B", expr="cluster:node_cpu:ratio_rate5m > 0.9"),
    ]
    assert dependency(RATE, *alerts) == []


def test_recording_rule_reading_a_missing_one_is_reported_there_only() -> None:
    ratio = {
        "record": "job:http_errors:ratio5m",
        "expr": "job:http_errors:rate5m / job:http_requests:rate5m",
    }
    alert = rule(expr="job:http_errors:ratio5m > 0.05")
    found = dependency(RATE, ratio, alert)
    assert [(f.rule, f.message.split("`")[1]) for f in found] == [
        ("job:http_errors:ratio5m", "job:http_errors:rate5m")
    ]
    assert "the recording rule reads nothing" in found[0].message


def test_recording_rules_in_another_linted_file_count() -> None:
    # the engine sees every file of the run: one file's alert reads another's recording rule
    from enricher.lint.config import Config
    from enricher.lint.engine import lint
    from enricher.lint.loader import Inputs, load_text

    records, _ = load_text("records.yml", rules_yaml(RATE))
    alerts, _ = load_text("alerts.yml", rules_yaml(rule(expr="job:http_requests:rate5m > 1")))
    assert records is not None and alerts is not None
    cfg = Config()
    cfg.enable = frozenset(("dependency",))
    assert of(lint(Inputs(files=[records, alerts]), cfg), "dependency") == []


def test_alerts_linted_without_any_recording_rule_are_not_checked() -> None:
    assert dependency(rule(expr="job:http_requests:rate5m > 1000")) == []


def test_recorded_names_are_fine() -> None:
    ratio = {
        "record": "job:http_errors:ratio5m",
        "expr": 'sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))'
        " / job:http_requests:rate5m",
    }
    alerts = [
        rule(alert="A", expr="job:http_errors:ratio5m > 0.05"),
        rule(alert="B", expr='job:http_requests:rate5m{job="api"} < 1'),
        rule(alert="C", expr='absent(job:http_requests:rate5m{job="api"})'),
    ]
    assert dependency(RATE, ratio, *alerts) == []


def test_raw_metrics_are_not_dependencies() -> None:
    alerts = [
        rule(alert="A", expr='up{job="node"} == 0'),
        rule(alert="B", expr="increase(kube_pod_container_status_restarts_total[1h]) > 3"),
    ]
    assert dependency(RATE, *alerts) == []


def test_recording_rule_that_does_not_parse_still_records_its_name() -> None:
    broken = {"record": "job:http_requests:rate1m", "expr": "sum by (job) (rate(x_total[1m])"}
    assert dependency(broken, rule(expr="job:http_requests:rate1m > 1")) == []


def test_disable_comment_silences_it() -> None:
    text = """
    groups:
      - name: checkout
        rules:
          - record: job:http_requests:rate5m
            expr: sum by (job) (rate(http_requests_total[5m]))
          # enricher-lint disable dependency
          - alert: FromElsewhere
            expr: job:http_requests:rate1h > 1
    """
    assert of(run(text, checks=("dependency",)), "dependency") == []
