"""Which alerts are pages: `paging:` label matchers, the run summary, and the `paging` check."""

from __future__ import annotations

from pathlib import Path

import pytest

from enricher.lint.checks import option_names
from enricher.lint.cli import main
from enricher.lint.config import Config, ConfigError, parse_config
from tests.lint.conftest import rule, rules_yaml, run


def _lint(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


COMPANY = rule(
    alert="PostgresDown",
    expr="pg_up == 0",
    labels={"severity": "s1", "pager": "pagerduty", "team": "db", "service": "orders-db"},
)


def test_paging_entries_are_alternatives_of_label_matchers() -> None:
    cfg = parse_config(
        {"paging": ['severity=~"critical|page"', 'pager="pagerduty", severity=~"s1|s2"']},
        option_names(),
    )
    assert cfg.is_page({"severity": "critical"})
    assert cfg.is_page({"severity": "s2", "pager": "pagerduty"})
    assert not cfg.is_page({"severity": "s2"})  # one entry needs all its matchers
    assert not cfg.is_page({"severity": "s3", "pager": "pagerduty"})
    assert not cfg.is_page({"severity": "criticality"})  # regexes are anchored, as in PromQL
    assert cfg.is_page({"severity": "page"})


def test_page_severities_is_still_read_as_a_severity_matcher() -> None:
    cfg = parse_config({"page_severities": ["sev-1", "sev.2"]}, option_names())
    assert cfg.is_page({"severity": "sev-1"}) and cfg.is_page({"severity": "sev.2"})
    assert not cfg.is_page({"severity": "sevx2"})  # names are literal, not regexes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"paging": 'severity="critical"'}, "`paging` must be a list of strings"),
        ({"paging": ["critical"]}, "`paging[0]` 'critical': cannot read"),
        ({"paging": ['severity=~"("']}, "bad regular expression"),
        ({"checks": {"labels": {"required": "severity"}}}, "write [severity]"),
        ({"checks": {"exemplars": {"only_pages": "yes"}}}, "must be true or false"),
        ({"profile": "lenient"}, "unknown profile 'lenient'"),
        ({"prometheus_version": "two"}, "is not X.Y"),
    ],
)
def test_config_mistakes_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_config(data, option_names())
    assert message in str(exc.value)


def test_symptom_check_follows_the_paging_definition() -> None:
    cpu = 'sum(rate(container_cpu_usage_seconds_total{service="orders-db"}[5m])) > 4'
    text = rules_yaml(dict(COMPANY, expr=cpu))
    assert not [f for f in run(text) if f.check == "symptom"]
    cfg = parse_config({"paging": ['pager="pagerduty"']}, option_names())
    found = [f for f in run(text, config=cfg) if f.check == "symptom"]
    assert found and "container_cpu_usage_seconds_total" in found[0].message


def test_no_page_while_labels_look_like_paging_is_reported_once() -> None:
    second = dict(COMPANY, alert="RedisDown", expr="redis_up == 0")
    found = [f for f in run(rules_yaml(COMPANY, second)) if f.check == "paging"]
    assert len(found) == 1
    assert "severity=s1 (2)" in found[0].message and "pager=pagerduty (2)" in found[0].message
    cfg = Config()
    cfg.paging = parse_config({"paging": ['severity="s1"']}, option_names()).paging
    assert not [f for f in run(rules_yaml(COMPANY, second), config=cfg) if f.check == "paging"]


def test_tickets_only_are_not_reported() -> None:
    ticket = rule(labels={"severity": "warning", "team": "p", "service": "checkout"})
    assert not [f for f in run(rules_yaml(ticket)) if f.check == "paging"]


def test_summary_says_how_many_alerts_are_pages(tmp_path: Path) -> None:
    ticket = rule(alert="Ticket", labels={"severity": "warning", "team": "p", "service": "c"})
    _, _, err = _lint("-", stdin=rules_yaml(rule(), ticket, COMPANY))
    assert '3 alerts (1 treated as pages by {severity=~"critical|page"})' in err
    cfg = tmp_path / "lint.yaml"
    cfg.write_text("paging: ['severity=~\"critical|page\"', 'pager=\"pagerduty\"']\n")
    _, _, err = _lint("--config", str(cfg), "-", stdin=rules_yaml(rule(), ticket, COMPANY))
    assert "3 alerts (2 treated as pages by" in err
