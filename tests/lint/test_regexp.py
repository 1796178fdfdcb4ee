"""regexp: regex matchers that are fixed strings, anchored, name-picking, no-ops or impossible."""

from __future__ import annotations

import pytest

from enricher.lint.model import Finding, Severity
from tests.lint.conftest import of, rule, run_rules


def regexp(expr: str) -> list[Finding]:
    return of(run_rules(rule(expr=expr), checks=("regexp",)), "regexp")


def test_regex_on_a_fixed_string_is_reported() -> None:
    found = regexp('sum(rate(http_requests_total{job=~"checkout"}[5m])) > 10')
    assert len(found) == 1
    assert found[0].severity is Severity.INFO  # slower, not wrong
    assert 'job="checkout"' in found[0].hint


def test_negated_regex_on_a_fixed_string_suggests_not_equal() -> None:
    found = regexp('up{job!~"node"} == 0')
    assert len(found) == 1 and 'job!="node"' in found[0].hint


def test_escaped_dots_are_still_a_fixed_string() -> None:
    found = regexp(r'up{instance=~"db1\\.example\\.com:9100"} == 0')
    assert len(found) == 1 and 'instance="db1.example.com:9100"' in found[0].hint


def test_anchored_fixed_string_is_reported_once() -> None:
    found = regexp('up{job=~"^node$"} == 0')
    assert len(found) == 1 and 'job="node"' in found[0].hint


def test_redundant_anchors_are_a_note() -> None:
    found = regexp('sum(rate(http_requests_total{status=~"^5..$"}[5m])) > 1')
    assert len(found) == 1
    assert found[0].severity is Severity.INFO
    assert 'status=~"5.."' in found[0].hint


def test_leading_anchor_alone_is_a_note() -> None:
    found = regexp('up{job=~"^kube-.*"} == 0')
    assert [f.severity for f in found] == [Severity.INFO]


def test_anchored_empty_value_suggests_equality() -> None:
    found = regexp('up{env=~"^$"} == 0')
    assert len(found) == 1 and 'env=""' in found[0].hint


def test_metric_name_regex_is_reported() -> None:
    found = regexp('sum by (job) ({__name__=~"http_requests_.*_total", job="api"}) > 0')
    assert len(found) == 1
    assert found[0].severity is Severity.WARNING
    assert "__name__" in found[0].message


def test_match_everything_is_a_note() -> None:
    found = regexp('up{job="node", instance=~".*"} == 0')
    assert len(found) == 1
    assert found[0].severity is Severity.INFO
    assert "filters nothing" in found[0].message


def test_pinned_value_the_regex_rejects_is_an_error() -> None:
    found = regexp('up{job="api", job=~"web-.*"} == 0')
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert "never both hold" in found[0].message


def test_pinned_value_the_negated_regex_matches_is_an_error() -> None:
    found = regexp('up{job="api", job!~"api|web"} == 0')
    assert [f.severity for f in found] == [Severity.ERROR]


def test_same_matcher_in_two_selectors_is_reported_once() -> None:
    expr = (
        'sum(rate(http_requests_total{job=~"api",code=~"5.."}[5m]))'
        ' / sum(rate(http_requests_total{job=~"api"}[5m])) > 0.05'
    )
    assert len(regexp(expr)) == 1


@pytest.mark.parametrize(
    "expr",
    [
        'sum(rate(http_requests_total{status=~"5.."}[5m])) by (job) > 1',
        'sum(rate(apiserver_request_total{code=~"5.+"}[5m])) > 1',
        'up{job=~"kube-.*|node"} == 0',
        'sum(rate(http_requests_total{code=~"[^0-9].*"}[5m])) > 0',
        'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} < 1e9',
        'probe_success{job=~"blackbox.*", instance!~".*internal.*"} == 0',
        'kube_pod_status_phase{phase=~"Pending|Unknown"} > 0',
        'up{job=~"(?i)Node"} == 0',
        r'up{instance=~"db\\d+:9100"} == 0',
        'container_memory_working_set_bytes{container!=""} > 1e9',
        # `job` pinned and a regex the value satisfies: consistent, just redundant
        'up{job="kube-apiserver", job=~"kube-.*"} == 0',
        # a regex Python and RE2 may read differently: no conflict is claimed
        'up{job="api", job=~"[[:alpha:]]+x"} == 0',
        # `.+` requires the label: a real filter
        'kube_pod_info{node=~".+"} > 0',
        # a literal `$` escaped, not an anchor
        r'up{path=~"/price\\$|/cost.*"} == 0',
    ],
)
def test_realistic_regexes_are_fine(expr: str) -> None:
    assert regexp(expr) == []


def test_default_alert_is_fine() -> None:
    assert of(run_rules(rule(), checks=("regexp",)), "regexp") == []
