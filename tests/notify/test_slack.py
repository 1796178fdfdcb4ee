"""The Slack webhook notifier: the message (golden), hostile content, and delivery to a
double that enforces Block Kit limits as Slack does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from enricher.analysis.model import LLMInfo
from enricher.notify.slack import build_message
from enricher.pipeline.stages import GatherInput, GatherOutput
from tests.conftest import MakeClient, checkout_bundle, post, wait_pages, webhook_body
from tests.doubles.slack import PATH, SlackDouble, problems
from tests.notify.test_pagerduty import _golden, _page


def test_message_for_the_checkout_incident_matches_its_golden_file() -> None:
    msg = build_message(_page(), public_url="https://enricher.example")
    _golden("slack-checkout-webhook.json", msg)
    assert problems(msg) == []
    text = json.dumps(msg)
    assert "db-primary" in text and "SELECT orders" in text
    assert "https://enricher.example/pages/7" in text


def test_hostile_content_never_notifies_and_stays_inside_the_limits() -> None:
    huge = "y" * 100_000
    page = _page(
        commonLabels={**webhook_body()["commonLabels"], "alertname": "<!channel> " + huge},
        commonAnnotations={"summary": "@here <@U123> <https://evil|click> \u202e\x1b[31m" + huge},
    )
    page.analysis = None  # the summary path
    msg = build_message(page)
    assert problems(msg) == []
    text = json.dumps(msg, ensure_ascii=False)
    for bad in ("<!channel>", "<@U123>", "<https://evil", "@here", "\u202e", "\x1b"):
        assert bad not in text, bad


def test_a_pending_llm_is_announced_only_as_an_edit_the_sender_can_make() -> None:
    page = _page()
    assert page.analysis is not None
    page.analysis.llm = LLMInfo(status="pending")
    bot = json.dumps(build_message(page, edits=True))
    hook = json.dumps(build_message(page))
    assert "LLM analysis pending: this message is updated when it lands" in bot
    assert "LLM analysis pending" in hook and "updated when it lands" not in hook
    page.analysis.llm = LLMInfo(status="ok")
    assert "LLM analysis pending" not in json.dumps(build_message(page, edits=True))
    page.analysis.llm = LLMInfo(status="pending")
    page.status = "resolved"
    assert "LLM analysis pending" not in json.dumps(build_message(page, edits=True))


class _Gatherer:
    async def gather(self, inp: GatherInput) -> GatherOutput:
        return GatherOutput(bundle=checkout_bundle())


@pytest.fixture
async def slack() -> AsyncIterator[SlackDouble]:
    d = SlackDouble()
    await d.start()
    yield d
    await d.stop()


def _config(slack: SlackDouble) -> dict[str, Any]:
    return {"notifiers": {"log": {"enabled": False}, "slack": {"webhook_url": slack.webhook_url}}}


async def test_a_page_reaches_slack_once_after_a_429(
    make_client: MakeClient, slack: SlackDouble
) -> None:
    slack.inject(PATH, status=429, times=1, body="rate_limited")
    client = await make_client(_config(slack), gatherer=_Gatherer())
    assert (await post(client, webhook_body())).status == 200
    [page] = await wait_pages(client, 1, timeout=15)
    assert slack.count(PATH) == 2 and len(slack.messages) == 1
    assert page["deliveries"][0]["state"] == "sent", page["deliveries"]
    # the webhook URL is the credential: never on a page
    assert slack.webhook_url not in await (await client.get("/api/v1/pages")).text()
