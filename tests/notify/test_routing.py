"""Routing: Alertmanager's matcher syntax, first match unless `continue`, a default route,
per-route Slack channels and PagerDuty keys, and a config that refuses what cannot route."""

from __future__ import annotations

from typing import Any

import pytest

from enricher.config import ConfigError, load_config
from enricher.notify.routing import Router, parse_matcher


def _config(routes: list[dict[str, Any]], **extra: Any) -> Any:
    return load_config(
        environ={},
        overrides={
            "notifiers": {
                "slack": {"bot_token": "xoxb-secret", "channel": "#oncall"},
                "pagerduty": {"routing_key": "R" * 32},
            },
            "routes": routes,
            **extra,
        },
    )


@pytest.mark.parametrize(
    ("matcher", "labels", "hit"),
    [
        ('team="payments"', {"team": "payments"}, True),
        ('team="payments"', {"team": "payments-eu"}, False),
        ("team=payments", {"team": "payments"}, True),
        ('team!="payments"', {"team": "search"}, True),
        ('team!="payments"', {}, True),
        ('team=""', {}, True),  # a missing label is the empty string, as in Alertmanager
        ('severity=~"critical|page"', {"severity": "page"}, True),
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored
        ('service!~"batch-.*"', {"service": "batch-nightly"}, False),
        ('service!~"batch-.*"', {"service": "checkout"}, True),
        (r'msg="say \"hi\""', {"msg": 'say "hi"'}, True),
    ],
)
def test_matchers_mean_what_they_mean_in_alertmanager(matcher, labels, hit):
    assert parse_matcher(matcher).matches(labels) is hit


@pytest.mark.parametrize("bad", ["team", 'team=="x"', '1team="x"', 'team=~"("', "team~x"])
def test_a_bad_matcher_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="matcher"):
        parse_matcher(bad)


def test_first_match_wins_continue_falls_through_default_catches_the_rest():
    cfg = _config(
        [
            {
                "name": "payments",
                "matchers": ['team="payments"'],
                "slack_channel": "#payments-oncall",
                "pagerduty_routing_key": "P" * 32,
                "continue": True,
            },
            {"name": "critical", "matchers": ['severity="critical"'], "notifiers": ["pagerduty"]},
            {"name": "never", "matchers": ['team="payments"'], "notifiers": ["slack"]},
        ]
    )
    r = Router(cfg)
    pay = r.targets({"team": "payments", "severity": "critical"})
    # no `notifiers` on a route: every configured one, in configured order
    assert [t.name for t in pay] == [
        "log@payments",
        "pagerduty@payments",
        "slack@payments",
        "pagerduty@critical",
    ]
    assert pay[2].channel == "#payments-oncall" and pay[1].routing_key == "P" * 32
    # `continue` fell through to "critical", which stops: "never" is not reached
    assert [t.name for t in r.targets({"team": "search", "severity": "critical"})] == [
        "pagerduty@critical"
    ]
    assert [t.name for t in r.targets({"team": "search", "severity": "warning"})] == [
        "log",
        "pagerduty",
        "slack",
    ]
    # stored target names map back to the same targets after a restart
    assert Router(cfg).target("slack@payments") == pay[2]
    assert r.target("webhook").notifier == "webhook"  # a row from before routing


def test_default_route_can_name_its_notifiers():
    cfg = _config([], default_route={"notifiers": ["slack"]})
    assert [t.name for t in Router(cfg).targets({"team": "x"})] == ["slack"]


def test_routing_keys_never_show_in_targets_or_their_dumps():
    cfg = _config(
        [{"name": "pay", "matchers": ['team="payments"'], "pagerduty_routing_key": "S3CR3T" * 6}]
    )
    [_, pd, _] = Router(cfg).targets({"team": "payments"})
    assert pd.routing_key == "S3CR3T" * 6
    assert "S3CR3T" not in repr(pd) and "S3CR3T" not in pd.model_dump_json()
    assert "S3CR3T" not in repr(cfg)


@pytest.mark.parametrize(
    ("routes", "extra", "needle"),
    [
        (
            [{"matchers": ['team="x"'], "notifiers": ["opsgenie"]}],
            {},
            "'opsgenie' is not configured",
        ),
        ([{"matchers": ["team"]}], {}, "matcher 'team'"),
        ([{"matchers": ['team="x"'], "unknown": 1}], {}, "unknown"),
        ([], {"default_route": {"notifiers": ["email"]}}, "default_route.notifiers"),
    ],
)
def test_config_refuses_routes_that_cannot_work(routes, extra, needle):
    with pytest.raises(ConfigError) as err:
        _config(routes, **extra)
    assert needle in str(err.value)


def test_a_slack_channel_route_needs_bot_mode():
    with pytest.raises(ConfigError, match=r"slack_channel needs notifiers\.slack\.bot_token"):
        load_config(
            environ={},
            overrides={
                "notifiers": {"slack": {"webhook_url": "https://hooks.slack.com/services/T/B/X"}},
                "routes": [{"matchers": ['team="x"'], "slack_channel": "#x"}],
            },
        )
