"""Delivery end to end on real components: real Alertmanager 0.25 -> enricher (subprocess)
-> Slack (bot mode) and PagerDuty doubles, with the checkout incident's evidence gathered
from a real Prometheus (exemplars) and the Tempo, Loki and Grafana doubles.

What it shows, in the order an on-call engineer would see it:
1. one Slack message and one PagerDuty trigger, although Slack answers a storm of 429s
   first and Alertmanager re-sends the notification every few seconds;
2. the page went out at its deadline with the LLM still thinking; when the LLM answers,
   the same Slack message is edited (no second message) and its thread detail shows it;
3. on resolve, the message is rewritten as resolved with its duration and a reply lands in
   its thread; PagerDuty gets one resolve with the trigger's dedup_key.

The alert is posted to Alertmanager's API (as Prometheus would) rather than fired by a rule,
so that the test decides when it resolves; its generatorURL carries the rule's expression,
which is what the enricher reads to ask Prometheus for exemplars.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.checkout_stack import checkout_backends, post_deploy
from tests.doubles.llm import LLMDouble
from tests.doubles.pagerduty import PagerDutyDouble
from tests.doubles.slack import TOKEN as SLACK_TOKEN
from tests.doubles.slack import SlackDouble, SlackMessage
from tests.realstack import (
    REAL_STACK,
    Alertmanager,
    Enricher,
    Prometheus,
    free_port,
    http_get,
    http_post,
    running,
    wait_until,
)

pytestmark = REAL_STACK

CHANNEL = "#payments-oncall"
INTAKE_TOKEN = "am-to-enricher-secret"
ROUTING_KEY = "R" * 32
EXPR = (
    'sum(rate(http_requests_total{service="checkout",status=~"5.."}[1m]))'
    ' / sum(rate(http_requests_total{service="checkout"}[1m])) > 0.05'
)
LABELS = {
    "alertname": "CheckoutHighErrorRate",
    "service": "checkout",
    "severity": "critical",
    "team": "payments",
}
DEADLINE_S = 6.0
LLM_LATENCY_S = 10.0  # the LLM answers well after the page's deadline
STORM = 5  # the first Slack calls answer 429 Retry-After: 1


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Stack:
    def __init__(
        self,
        enricher: Enricher,
        am: Alertmanager,
        prom: Prometheus,
        slack: SlackDouble,
        pd: PagerDutyDouble,
    ) -> None:
        self.enricher, self.am, self.prom, self.slack, self.pd = enricher, am, prom, slack, pd
        self.starts = datetime.now(UTC) - timedelta(seconds=30)

    def post_alert(self, *, resolved: bool = False) -> None:
        """What Prometheus sends: the alert, with an end in the future while it fires."""
        now = datetime.now(UTC)
        alert = {
            "labels": LABELS,
            "annotations": {
                "summary": "Checkout 5xx rate is above 5%",
                "runbook_url": "https://runbooks.example.com/payments/checkout-5xx",
            },
            "startsAt": _ts(self.starts),
            "endsAt": _ts(now if resolved else now + timedelta(minutes=10)),
            "generatorURL": f"{self.prom.url}/graph?"
            + urllib.parse.urlencode({"g0.expr": EXPR, "g0.tab": "1"}),
        }
        status, body = http_post(f"{self.am.url}/api/v2/alerts", json.dumps([alert]).encode())
        assert status == 200, body

    def messages(self) -> list[SlackMessage]:
        return self.slack.bot_messages(CHANNEL)

    def metric(self, name: str, **labels: str) -> float:
        text = str(http_get(f"{self.enricher.url}/metrics"))
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name + ("{" + want + "}" if want else "")) + r" ([0-9.e+]+)"
        m = re.search("^" + pattern + "$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def page(self) -> dict[str, Any]:
        [summary] = [
            p for p in self.enricher.pages() if p["labels"].get("alertname") == LABELS["alertname"]
        ][-1:]
        return dict(self.enricher.get(f"/api/v1/pages/{summary['id']}"))


def _exemplars_ready(prom: Prometheus) -> bool:
    now = time.time()
    q = urllib.parse.urlencode(
        {"query": 'http_request_duration_seconds_bucket{service="checkout"}', "start": now - 60}
        | {"end": now}
    )
    got = http_get(f"{prom.url}/api/v1/query_exemplars?{q}")
    return bool(got.get("data"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("delivery-e2e")
    slack = SlackDouble(rate_per_channel=1.0, burst=1, retry_after=1)
    pd = PagerDutyDouble()
    llm = LLMDouble("valid", latency=LLM_LATENCY_S)
    for d in (slack, pd, llm):
        d.start_in_thread()
    slack.fail("*", "ratelimited", times=STORM, status=429, retry_after=1)
    try:
        with checkout_backends() as backends:
            port = free_port()
            am = Alertmanager(
                root / "am",
                webhook_url=f"http://127.0.0.1:{port}/api/v1/alerts",
                bearer_token=INTAKE_TOKEN,
                repeat_interval="3s",  # Alertmanager re-sends the same notification often
            )
            prom = Prometheus(root / "prom", scrape_targets=[f"127.0.0.1:{backends.exporter_port}"])
            with prom:
                config = {
                    "public_url": f"http://127.0.0.1:{port}",
                    "intake": {"auth": {"bearer_token": INTAKE_TOKEN}},
                    "pipeline": {
                        "deadlines": {"default": DEADLINE_S, "critical": DEADLINE_S},
                        "delivery_reserve": 1.0,
                    },
                    "sources": backends.sources(prom.url),
                    "analysis": {
                        "llm": {
                            "base_url": f"{llm.url}/v1",
                            "model": "m",
                            "max_retries": 0,
                            "first_token_timeout": "30s",
                            "total_timeout": "40s",
                        }
                    },
                    "notifiers": {
                        "slack": {
                            "bot_token": SLACK_TOKEN,
                            "channel": CHANNEL,
                            "api_url": slack.api_url,
                        },
                        "pagerduty": {"routing_key": ROUTING_KEY, "url": pd.endpoint},
                    },
                }
                enricher = Enricher(root / "enricher", port=port, config=config)
                with running(enricher, am):
                    post_deploy(enricher)
                    wait_until(lambda: _exemplars_ready(prom), 30, 0.5, "exemplars in Prometheus")
                    yield Stack(enricher, am, prom, slack, pd)
                log = enricher.log()
                assert "Traceback" not in log, log[-3000:]
                for secret in (SLACK_TOKEN, ROUTING_KEY, INTAKE_TOKEN):
                    assert secret not in log
    finally:
        for d in (slack, pd, llm):
            d.stop_thread()


def test_one_page_edited_with_the_late_analysis_then_resolved(stack: Stack) -> None:
    t0 = time.monotonic()
    stack.post_alert()

    # 1. The page reaches Slack once, through the 429 storm, and PagerDuty once.
    [message] = wait_until(stack.messages, 60, 0.2, "the Slack message")
    posted_after = time.monotonic() - t0
    assert stack.slack.rate_limited >= STORM
    first = message.history[0] if message.history else message.content
    assert "CheckoutHighErrorRate" in first["text"]
    wait_until(lambda: stack.pd.events, 30, 0.2, "the PagerDuty trigger")
    [trigger] = stack.pd.events
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == ROUTING_KEY

    # 2. The page went out before the LLM answered, and said so; the answer edits it.
    page = stack.page()
    assert page["paged_at"] <= page["deadline"], page
    assert page["evidence"]["culprit"]["service"] == "db-primary"
    first_blocks = json.dumps(first["blocks"])
    assert "LLM analysis pending" in first_blocks
    assert "db-primary" in first_blocks

    def analysed() -> dict[str, Any] | None:
        doc = stack.page()
        return doc if doc["analysis"]["llm"]["status"] == "ok" else None

    wait_until(analysed, 60, 0.5, "the LLM's answer on the stored page")
    edited = wait_until(
        lambda: [m for m in stack.messages() if "LLM analysis pending" not in json.dumps(m.blocks)],
        30,
        0.2,
        "the Slack message edited with the analysis",
    )
    assert [m.ts for m in edited] == [message.ts]
    # The thread detail (all hypotheses, stage timings) is edited too, not posted again.
    wait_until(
        lambda: "LLM ok" in json.dumps(stack.slack.replies(CHANNEL, message.ts)[0].blocks),
        30,
        0.2,
        "the thread detail edited with the analysis",
    )
    assert len(stack.slack.replies(CHANNEL, message.ts)) == 1

    # Alertmanager kept re-sending the firing notification meanwhile: folded, not paged.
    wait_until(
        lambda: stack.metric("enricher_notifications_total", outcome="duplicate") >= 2,
        20,
        0.5,
        "Alertmanager's repeats of the notification",
    )
    assert len(stack.messages()) == 1
    assert [e["event_action"] for e in stack.pd.events] == ["trigger"]

    # 3. Resolve: the message is rewritten, its thread says so, PagerDuty resolves.
    stack.post_alert(resolved=True)
    wait_until(
        lambda: len(stack.pd.events) >= 2 and "RESOLVED" in stack.messages()[0].text,
        60,
        0.2,
        "the resolve in Slack and PagerDuty",
    )
    wait_until(
        lambda: len(stack.slack.replies(CHANNEL, message.ts)) >= 2, 30, 0.2, "the resolved reply"
    )
    time.sleep(4)  # room for any duplicate post or event to show up
    [final] = stack.messages()
    assert final.ts == message.ts and final.edits >= 2
    assert "[RESOLVED]" in final.text
    replies = stack.slack.replies(CHANNEL, message.ts)
    assert len(replies) == 2 and replies[1].text.startswith("Resolved after")
    trigger, resolve = stack.pd.events
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"]

    # Every outbox entry is sent; nothing failed, nothing is left pending.
    pages = stack.enricher.pages()
    states = {
        (p["id"], d["notifier"], d["kind"]): d["state"]
        for p in pages
        for d in stack.enricher.get(f"/api/v1/pages/{p['id']}")["deliveries"]
    }
    assert states and set(states.values()) == {"sent"}, states
    print(
        f"slack message after {posted_after:.1f}s through {stack.slack.rate_limited} 429s; "
        f"edits {final.edits}; deliveries {states}"
    )
