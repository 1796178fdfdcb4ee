"""promql: expressions that evaluate but alert wrong."""

from __future__ import annotations

import pytest

from enricher.lint.config import Config
from enricher.lint.model import Severity
from tests.lint.conftest import of, rule, run_rules


def promql(*rules: dict, config: Config | None = None) -> list:
    return of(run_rules(*rules, config=config), "promql")


def test_good_expression_is_clean() -> None:
    assert promql(rule()) == []


@pytest.mark.parametrize(
    "metric",
    ["node_memory_usage_ratio", "cpu_percent", "node_hwmon_temp_celsius", "up", "build_info"],
)
def test_rate_on_gauge_is_reported(metric: str) -> None:
    found = promql(rule(expr=f"rate({metric}[5m]) > 0"))
    assert len(found) == 1
    assert found[0].message.startswith(f"rate() over `{metric}`, which is a gauge by its name")


@pytest.mark.parametrize(
    "metric",
    [
        "http_requests_total",
        "x_seconds_count",
        "x_seconds_sum",
        "x_bucket",
        "node_vmstat_pgmajfault",
    ],
)
def test_rate_on_counters_and_unknown_names_is_quiet(metric: str) -> None:
    assert promql(rule(expr=f"rate({metric}[5m]) > 0")) == []


def test_rate_over_a_recorded_rate_is_reported() -> None:
    record = {
        "record": "job:requests:rate5m",
        "expr": "sum by (job) (rate(http_requests_total[5m]))",
    }
    found = promql(record, rule(expr="rate(job:requests:rate5m[5m]) > 1"))
    assert len(found) == 1 and "already records rate()" in found[0].message


def test_rate_over_a_recorded_counter_sum_is_fine() -> None:
    record = {"record": "job:requests:sum", "expr": "sum by (job) (http_requests_total)"}
    assert promql(record, rule(expr="rate(job:requests:sum[5m]) > 1")) == []


def test_rate_of_sum_subquery_is_an_error() -> None:
    found = promql(rule(expr="rate(sum(http_requests_total)[5m:1m]) > 1"))
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert "aggregated subquery" in found[0].message


def test_range_shorter_than_two_scrapes_is_reported() -> None:
    cfg = Config(scrape_interval=30.0)
    found = promql(rule(expr="rate(http_requests_total[45s]) > 1"), config=cfg)
    assert len(found) == 1
    assert "covers less than two scrapes (scrape interval 30s)" in found[0].message
    assert promql(rule(expr="rate(http_requests_total[1m]) > 1"), config=cfg) == []


def test_histogram_quantile_without_le_is_an_error() -> None:
    expr = "histogram_quantile(0.99, sum by (service) (rate(x_seconds_bucket[5m]))) > 1"
    found = promql(rule(expr=expr))
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert "drops the `le` label" in found[0].message


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantile(0.99, sum by (le, service) (rate(x_seconds_bucket[5m]))) > 1",
        "histogram_quantile(0.99, sum without (instance) (rate(x_seconds_bucket[5m]))) > 1",
        "histogram_quantile(0.99, rate(x_seconds_bucket[5m])) > 1",
        "histogram_quantile(0.99, sum(rate(x_seconds[5m]))) > 1",  # native histogram: no le
    ],
)
def test_histogram_quantile_keeping_le_is_fine(expr: str) -> None:
    assert promql(rule(expr=expr)) == []


@pytest.mark.parametrize("expr", ["up", "rate(http_requests_total[5m])", "up > bool 0"])
def test_alert_without_comparison_is_reported(expr: str) -> None:
    found = promql(rule(expr=expr))
    assert len(found) == 1
    assert "always fires" in found[0].message or "has no comparison" in found[0].message


@pytest.mark.parametrize(
    "expr",
    [
        "vector(1)",  # Watchdog: deliberate
        'absent(up{job="checkout"})',
        "up == 0 and on () vector(1)",
        'ALERTS{alertname="X"}',
        "(rate(x_total[5m]) > 1) * 100",
    ],
)
def test_alerts_that_filter_are_fine(expr: str) -> None:
    found = promql(rule(expr=expr, for_="5m"))
    assert [f for f in found if "comparison" in f.message or "always" in f.message] == []


def test_recorded_comparison_counts_as_a_comparison() -> None:
    record = {"record": "job:errors:too_high", "expr": "sum by (job) (rate(errors_total[5m])) > 1"}
    assert promql(record, rule(expr="job:errors:too_high")) == []


def test_absent_without_for_is_reported() -> None:
    found = promql(rule(expr='absent(up{job="checkout"})', for_=None))
    assert [f.message for f in found] == [
        "absent() alert without `for`: one missed scrape or a restart pages"
    ]
    assert promql(rule(expr='absent(up{job="checkout"})', for_="5m")) == []
