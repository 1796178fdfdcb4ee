"""The Slack bot notifier (`chat.postMessage`, `chat.update`, thread replies, per-channel
queue): the messages (golden), idempotent retries, updates and resolves through receipts,
the error mapping, rate limits, and hostile content, against a double of the Web API."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientSession
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enricher.analysis.model import DeployVerdict, Hypothesis, LLMInfo
from enricher.bundle.model import EvidenceItem, Missing
from enricher.config import SlackNotifierConfig, load_config
from enricher.notify import build_notifiers
from enricher.notify.base import DeliveryError, SendContext
from enricher.notify.channel_queue import ChannelQueue
from enricher.notify.page import Page
from enricher.notify.routing import Target
from enricher.notify.slack import (
    SlackWebhookNotifier,
    build_detail,
    build_message,
    build_resolved,
    resolved_minutes,
)
from enricher.notify.slack_bot import SlackBotNotifier, post_body
from enricher.sources.loki import LogLine, LogTemplate
from tests.doubles.slack import POST_MESSAGE, TOKEN, UPDATE, SlackDouble, problems
from tests.notify.test_pagerduty import _golden, _page

PUBLIC = "https://enricher.example"
CHANNEL = "#payments-oncall"
ENDS = "2026-11-27T17:02:37.704Z"  # 42 min after the checkout alert started
HOSTILE = ("<!channel>", "<!here>", "<@U123>", "<https://evil", "@here", "\u202e", "\x1b")


def _timed(page: Page) -> Page:
    page.timings = {"gather": 812.4, "analyse": 40.2}
    return page


def _resolved(page_id: int = 8, resolves: int = 7) -> Page:
    page = _page(status="resolved", alert={"status": "resolved", "endsAt": ENDS})
    page.id, page.resolves = page_id, resolves
    page.evidence, page.analysis = None, None  # the pipeline gathers nothing for a resolve
    return page


class Ctx:
    """A SendContext whose `save` records each receipt as the outbox stores it."""

    def __init__(self, slack: SlackDouble | None = None, **kw: Any) -> None:
        self.saves: list[dict[str, str]] = []
        self.posts_at_save: list[int] = []
        self.slack = slack
        self.ctx = SendContext(target=kw.pop("target", Target(name="slack", notifier="slack")))
        for k, v in kw.items():
            setattr(self.ctx, k, v)
        self.ctx.save = self._save

    async def _save(self, receipt: dict[str, str]) -> None:
        self.saves.append(dict(receipt))
        self.posts_at_save.append(self.slack.posts if self.slack else -1)
        self.ctx.receipt = dict(receipt)

    @property
    def receipt(self) -> dict[str, str]:
        return self.ctx.receipt


async def _deliver(
    notifier: SlackBotNotifier, page: Page, c: Ctx, attempts: int = 50
) -> list[DeliveryError]:
    """What the outbox does: retry retryable errors after their Retry-After."""
    errors: list[DeliveryError] = []
    for _ in range(attempts):
        try:
            await notifier.send(page, c.ctx)
            return errors
        except DeliveryError as exc:
            if not exc.retryable:
                raise
            errors.append(exc)
            await asyncio.sleep(exc.retry_after if exc.retry_after is not None else 0.01)
    raise AssertionError(f"not delivered after {attempts} attempts: {errors[-1]}")


@pytest.fixture
async def slack() -> AsyncIterator[SlackDouble]:
    d = SlackDouble()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def bot(slack: SlackDouble) -> AsyncIterator[SlackBotNotifier]:
    n = _bot(slack)
    yield n
    await n.close()


def _bot(slack: SlackDouble, **config: Any) -> SlackBotNotifier:
    cfg = {"bot_token": TOKEN, "channel": CHANNEL, "api_url": slack.api_url, "min_interval": 0}
    return SlackBotNotifier(SlackNotifierConfig(**{**cfg, **config}), PUBLIC)


# --- the messages ------------------------------------------------------------------------


def test_bot_message_for_the_checkout_incident_matches_its_golden_file() -> None:
    body = post_body(build_message(_page(), PUBLIC), "C0PAYMENTS")
    _golden("slack-checkout-bot.json", body)
    assert problems(body) == []
    assert body["unfurl_links"] is False and body["channel"] == "C0PAYMENTS"
    assert body["blocks"] == build_message(_page(), PUBLIC)["blocks"]


def test_thread_detail_for_the_checkout_incident_matches_its_golden_file() -> None:
    msg = build_detail(_timed(_page()))
    _golden("slack-checkout-detail.json", msg)
    assert problems(msg) == []
    text = json.dumps(msg, ensure_ascii=False)
    # every hypothesis, with its confidence and evidence ids, and the stage timings
    assert "Hypothesis 1 · 90% confidence" in text and "Hypothesis 2 · 60% confidence" in text
    assert "`span:db-primary:SELECT orders`" in text
    assert "`contrast:checkout:POST /api/checkout`" in text
    assert "gather 812 ms · analyse 40 ms" in text


def test_resolved_edit_for_the_checkout_incident_matches_its_golden_file() -> None:
    msg = build_resolved(_page(), _resolved(), PUBLIC)
    _golden("slack-checkout-resolved.json", msg)
    assert problems(msg) == []
    assert msg["blocks"][0]["text"]["text"] == "[RESOLVED] CheckoutHighErrorRate · checkout"
    text = json.dumps(msg, ensure_ascii=False)
    assert "Resolved after 42 min" in text
    # the hypothesis and the evidence stay; the urgency (severity, "-> check ...", the
    # runbook button) goes
    assert "db-primary `SELECT orders` took 1.21 s" in text and "Suspect span" in text
    assert "CRITICAL" not in text and "-&gt; check" not in text and "Runbook" not in text
    assert "resolved by page 8" in text


def test_resolved_minutes_run_from_the_first_start_to_the_last_end() -> None:
    assert resolved_minutes(_page(), _resolved()) == 42
    still = _page(status="resolved")  # no endsAt: until the resolution arrived
    assert resolved_minutes(_page(), still) == round(
        (still.received_at - _page().alerts[0].starts_at).total_seconds() / 60
    )


def _rich_page() -> Page:
    """The checkout page with what the recorded bundle lacks: logs, deploys, missing."""
    page = _timed(_page())
    assert page.evidence is not None and page.analysis is not None
    b, a = page.evidence, page.analysis
    for i in range(7):
        line = f"ERROR order {i} failed: statement timeout & <retry>"
        b.items.append(
            EvidenceItem(
                id=f"log:{i}",
                kind="log",
                source="loki",
                priority=5,
                summary="log line",
                log=LogLine(ts_ns=i, line=line, service="checkout"),
            )
        )
    b.items.append(
        EvidenceItem(
            id="log_template:0",
            kind="log_template",
            source="loki",
            priority=6,
            summary="template",
            template=LogTemplate(
                template="x", count=40, example="e", service="s", first_ns=0, last_ns=1
            ),
        )
    )
    assert b.culprit is not None
    b.culprit.log_item_ids = ["log:3"]
    b.missing = [Missing(what="logs", source="loki", reason="timeout after 2.0s")]
    a.deploys = [
        DeployVerdict(
            service="checkout",
            version="v2.14.1",
            minutes_before_alert=12,
            verdict="ruled_out",
            reason="healthy traces run the same version",
        )
    ]
    a.llm = LLMInfo(model="qwen2.5-7b", status="ok", latency_ms=2100)
    return page


def test_detail_has_more_log_lines_deploys_missing_evidence_and_timings() -> None:
    msg = build_detail(_rich_page())
    assert problems(msg) == []
    text = "\n".join(b.get("text", {}).get("text", "") for b in msg["blocks"])
    context = json.dumps(msg["blocks"][-1], ensure_ascii=False)
    logs = next(b["text"]["text"] for b in msg["blocks"] if "*Log lines*" in str(b))
    # the culprit's line first, five in all, as code, escaped
    assert logs.count("ERROR order") == 5 and logs.index("order 3") < logs.index("order 0")
    assert "```" in logs and "&amp; &lt;retry&gt;" in logs and "<retry>" not in logs
    assert "checkout v2.14.1 (12 min before): ruled out: healthy traces" in text
    assert "loki: logs: timeout after 2.0s" in text
    assert "gather 812 ms" in context and "LLM ok (qwen2.5-7b, 2100 ms)" in context


# --- delivery ----------------------------------------------------------------------------


async def test_first_send_posts_saves_the_receipt_at_once_then_replies_with_detail(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    c = Ctx(slack)
    await bot.send(_timed(_page()), c.ctx)
    [msg] = slack.bot_messages(CHANNEL)
    # saved right after the post was accepted, before the reply, with the channel's ID
    assert c.saves[0] == {"channel": "C0PAYMENTS", "ts": msg.ts} and c.posts_at_save[0] == 1
    [detail] = slack.replies("C0PAYMENTS", msg.ts)
    assert c.receipt == {"channel": "C0PAYMENTS", "ts": msg.ts, "detail_ts": detail.ts}
    assert msg.content == build_message(_page(), PUBLIC) and msg.edits == 0
    assert detail.content == build_detail(_timed(_page()))
    method, body = slack.api_calls[0]
    assert method == "chat.postMessage"
    assert body == post_body(build_message(_page(), PUBLIC), CHANNEL)
    [(_, path, _, headers), *_] = slack.requests
    assert path == POST_MESSAGE and headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json; charset=utf-8"


async def test_a_retry_edits_the_message_it_posted_instead_of_posting_another(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    slack.fail("chat.postMessage", "service_unavailable", after=1)  # the detail reply
    c = Ctx(slack)
    errors = await _deliver(bot, _page(), c)
    assert len(errors) == 1 and "service_unavailable" in str(errors[0])
    [msg] = slack.bot_messages(CHANNEL)
    assert msg.edits == 1 and slack.updates == 1  # the retry updated it
    assert len(slack.replies(CHANNEL, msg.ts)) == 1
    assert c.receipt["ts"] == msg.ts and c.receipt["detail_ts"]
    # yet another attempt (the outbox lost the final state): still one message, one reply
    await bot.send(_page(), c.ctx)
    assert len(slack.bot_messages(CHANNEL)) == 1 and len(slack.replies(CHANNEL, msg.ts)) == 1
    assert slack.posts == 2


async def test_an_update_edits_the_main_message_and_the_detail_reply(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    c = Ctx(slack)
    await bot.send(_page(), c.ctx)
    first = dict(c.receipt)
    page = _timed(_page())
    assert page.analysis is not None
    page.analysis.hypotheses.insert(
        0,
        Hypothesis(
            statement="the LLM says: the orders index was dropped",
            confidence=0.95,
            evidence_ids=["span:db-primary:SELECT orders"],
            source="llm",
        ),
    )
    u = Ctx(slack, receipt=first, update=True)
    await bot.send(page, u.ctx)
    [msg] = slack.bot_messages(CHANNEL)
    [detail] = slack.replies(CHANNEL, msg.ts)
    assert msg.edits == 1 and detail.edits == 1 and slack.posts == 2 and slack.updates == 2
    assert "orders index was dropped" in json.dumps(msg.blocks, ensure_ascii=False)
    assert "Hypothesis 1 · 95% confidence · LLM" in json.dumps(detail.blocks, ensure_ascii=False)
    assert u.saves == []  # nothing new to remember


async def test_a_resolve_edits_the_prior_message_and_replies_once_even_when_retried(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    firing = _page()
    c = Ctx(slack)
    await bot.send(firing, c.ctx)
    prior = dict(c.receipt)
    slack.fail("chat.postMessage", "internal_error")  # the "resolved" reply, once
    r = Ctx(slack, prior_receipt=prior, prior_page=firing)
    errors = await _deliver(bot, _resolved(), r)
    assert len(errors) == 1
    [msg] = slack.bot_messages(CHANNEL)
    assert msg.ts == prior["ts"] and msg.content == build_resolved(firing, _resolved(), PUBLIC)
    replies = slack.replies(CHANNEL, msg.ts)
    assert [x.text for x in replies[1:]] == ["Resolved after 42 min"]
    assert r.receipt == {
        "channel": "C0PAYMENTS",
        "ts": prior["ts"],
        "resolved_reply_ts": replies[1].ts,
    }
    # retried after it was all done: no second reply, no further edit
    updates = slack.updates
    await bot.send(_resolved(), r.ctx)
    assert len(slack.replies(CHANNEL, msg.ts)) == 2 and slack.updates == updates
    assert len(slack.bot_messages(CHANNEL)) == 1


async def test_a_late_update_of_a_resolved_page_keeps_it_resolved(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    c = Ctx(slack)
    await bot.send(_page(), c.ctx)
    page = _page()
    page.resolved_at = page.alerts[0].starts_at + timedelta(minutes=42)
    await bot.send(page, Ctx(slack, receipt=dict(c.receipt), update=True).ctx)
    [msg] = slack.bot_messages(CHANNEL)
    assert msg.blocks[0]["text"]["text"].startswith("[RESOLVED]") and msg.edits == 1
    assert "Resolved after 42 min" in msg.blocks[1]["text"]["text"]


async def test_a_resolve_without_a_prior_message_posts_a_resolved_message(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    c = Ctx(slack)
    await bot.send(_resolved(), c.ctx)
    [msg] = slack.bot_messages(CHANNEL)
    assert msg.content == build_resolved(None, _resolved(), PUBLIC)
    assert msg.blocks[0]["text"]["text"].startswith("[RESOLVED]")
    assert slack.replies(CHANNEL, msg.ts) == []  # no detail for a resolution
    assert c.receipt == {"channel": "C0PAYMENTS", "ts": msg.ts}


async def test_a_deleted_message_is_posted_anew(slack: SlackDouble, bot: SlackBotNotifier) -> None:
    c = Ctx(slack)
    await bot.send(_page(), c.ctx)
    old = c.receipt["ts"]
    slack.delete(CHANNEL, old)
    u = Ctx(slack, receipt=dict(c.receipt), update=True)
    await bot.send(_page(), u.ctx)
    [msg] = slack.bot_messages(CHANNEL)
    assert msg.ts != old and u.saves[0] == {"channel": "C0PAYMENTS", "ts": msg.ts}
    assert len(slack.replies(CHANNEL, msg.ts)) == 1 and u.receipt["detail_ts"]
    # and a resolve whose firing message is gone gets a message of its own
    slack.delete(CHANNEL, msg.ts)
    r = Ctx(slack, prior_receipt=dict(u.receipt), prior_page=_page())
    await bot.send(_resolved(), r.ctx)
    [gone] = slack.bot_messages(CHANNEL)
    assert gone.blocks[0]["text"]["text"].startswith("[RESOLVED]")
    assert [x.text for x in slack.replies(CHANNEL, gone.ts)] == ["Resolved after 42 min"]
    assert r.receipt["ts"] == gone.ts


async def test_a_route_channel_overrides_the_default(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    target = Target(name="slack@search", notifier="slack", channel="#search-oncall")
    c = Ctx(slack, target=target)
    await bot.send(_page(), c.ctx)
    assert c.receipt["channel"] == "C0SEARCH" and len(slack.bot_messages("C0SEARCH")) == 1
    assert slack.bot_messages(CHANNEL) == []


async def test_without_thread_detail_there_is_no_reply(slack: SlackDouble) -> None:
    bot = _bot(slack, thread_detail=False)
    c = Ctx(slack)
    await bot.send(_page(), c.ctx)
    await bot.close()
    assert slack.replies(CHANNEL, c.receipt["ts"]) == [] and set(c.receipt) == {"channel", "ts"}


def test_build_notifiers_picks_bot_mode_by_the_token() -> None:
    def slack_of(cfg: dict[str, Any]) -> object:
        config = load_config(environ={}, overrides={"notifiers": {"slack": cfg}})
        return next(n for n in build_notifiers(config) if n.name == "slack")

    bot = slack_of({"bot_token": TOKEN, "channel": CHANNEL})
    assert isinstance(bot, SlackBotNotifier) and bot.edits and bot.paced
    hook = slack_of({"webhook_url": "https://hooks.slack.com/services/T/B/X"})
    assert isinstance(hook, SlackWebhookNotifier) and not hook.edits
    assert TOKEN not in repr(
        load_config(
            environ={}, overrides={"notifiers": {"slack": {"bot_token": TOKEN, "channel": CHANNEL}}}
        )
    )


# --- errors ------------------------------------------------------------------------------

PERMANENT = [
    "invalid_blocks",
    "invalid_blocks_format",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "account_inactive",
    "missing_scope",
    "msg_too_long",
    "no_text",
    "invalid_arguments",
    "some_future_error",
]
TRANSIENT = ["internal_error", "fatal_error", "service_unavailable", "request_timeout"]


@pytest.mark.parametrize("error", PERMANENT)
async def test_web_api_errors_that_fail_again_are_permanent(
    slack: SlackDouble, bot: SlackBotNotifier, error: str
) -> None:
    slack.fail("*", error)
    with pytest.raises(DeliveryError) as info:
        await bot.send(_page(), Ctx(slack).ctx)
    assert not info.value.retryable and error in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("error", TRANSIENT)
async def test_slack_being_busy_is_retryable(
    slack: SlackDouble, bot: SlackBotNotifier, error: str
) -> None:
    slack.fail("*", error)
    with pytest.raises(DeliveryError) as info:
        await bot.send(_page(), Ctx(slack).ctx)
    assert info.value.retryable and error in str(info.value)


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ({"error": "ratelimited", "status": 429, "retry_after": 3}, 3.0),
        ({"error": "ratelimited", "status": 429}, 1.0),  # no Retry-After: one second
        ({"error": "ratelimited"}, 1.0),  # as ok:false on HTTP 200
        ({"error": "rate_limited", "retry_after": 2}, 2.0),
    ],
)
async def test_rate_limits_are_retryable_after_their_delay(
    slack: SlackDouble, bot: SlackBotNotifier, fault: dict[str, Any], retry_after: float
) -> None:
    slack.fail("chat.postMessage", **fault)
    with pytest.raises(DeliveryError) as info:
        await bot.send(_page(), Ctx(slack).ctx)
    assert info.value.retryable and info.value.retry_after == retry_after
    assert bot.queue.paused_for(CHANNEL) > retry_after - 0.5


@pytest.mark.parametrize(
    ("status", "body", "content_type", "retryable"),
    [
        (500, "oops", "text/plain", True),
        (503, "<html>busy</html>", "text/html", True),
        (200, "<html>not json</html>", "text/html", True),  # a proxy's page
        (200, '{"no": "ok"}', "application/json", True),
        (200, "[1, 2]", "application/json", True),
        (404, "not found", "text/plain", False),
        (400, f"bad token {TOKEN}", "text/plain", False),  # echoed token, scrubbed
    ],
)
async def test_http_answers_map_onto_retries(
    slack: SlackDouble,
    bot: SlackBotNotifier,
    status: int,
    body: str,
    content_type: str,
    retryable: bool,
) -> None:
    slack.inject(POST_MESSAGE, status=status, body=body, content_type=content_type, times=1)
    with pytest.raises(DeliveryError) as info:
        await bot.send(_page(), Ctx(slack).ctx)
    assert info.value.retryable is retryable
    assert TOKEN not in str(info.value)
    assert slack.bot_messages(CHANNEL) == []


async def test_the_doubles_own_checks_are_permanent_errors(slack: SlackDouble) -> None:
    for config, error in (
        ({"bot_token": "xoxb-wrong"}, "invalid_auth"),
        ({"channel": "#nowhere"}, "channel_not_found"),
    ):
        bot = _bot(slack, **config)
        with pytest.raises(DeliveryError) as info:
            await bot.send(_page(), Ctx(slack).ctx)
        await bot.close()
        assert not info.value.retryable and error in str(info.value)
        assert "xoxb-wrong" not in str(info.value) and TOKEN not in str(info.value)


async def test_the_token_never_appears_in_errors_or_logs(
    slack: SlackDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    port = slack.url.rsplit(":", 1)[1]
    await slack.stop()  # nothing listens any more: connection refused
    bot = _bot(slack)
    for _ in range(2):
        try:
            await bot.send(_page(), Ctx().ctx)
        except DeliveryError as exc:
            seen.append(str(exc))
            assert exc.retryable
    await bot.close()
    await slack.start(port=int(port))
    slack.fail("chat.postMessage", "invalid_blocks", after=1)  # the detail reply: logged
    bot = _bot(slack)
    await bot.send(_page(), Ctx(slack).ctx)
    await bot.close()
    assert seen and all(TOKEN not in s for s in seen)
    assert "invalid_blocks" in caplog.text and TOKEN not in caplog.text


async def test_a_detail_reply_slack_rejects_for_good_does_not_fail_the_page(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    slack.fail("chat.postMessage", "msg_too_long", after=1)
    c = Ctx(slack)
    await bot.send(_page(), c.ctx)  # no error: the page itself is there
    assert len(slack.bot_messages(CHANNEL)) == 1 and "detail_ts" not in c.receipt


# --- the per-channel queue ---------------------------------------------------------------


async def test_a_429_storm_delivers_every_page_once(slack: SlackDouble) -> None:
    slack.rate_per_channel, slack.burst = 20.0, 2
    bot = _bot(slack, min_interval=0.005)
    pages, ctxs = [], []
    for i in range(20):
        page = _page()
        page.id = 100 + i
        pages.append(page)
        ctxs.append(Ctx(slack))
    t0 = time.monotonic()
    results = await asyncio.gather(*(_deliver(bot, p, c) for p, c in zip(pages, ctxs, strict=True)))
    elapsed = time.monotonic() - t0
    await bot.close()
    errors = [e for r in results for e in r]
    assert slack.rate_limited > 0 and errors
    assert all(e.retryable and e.retry_after == 1.0 for e in errors)
    messages = slack.bot_messages(CHANNEL)
    ids = sorted(int(m.blocks[-1]["elements"][-1]["text"].split()[1]) for m in messages)
    assert ids == [p.id for p in pages]  # every page once, none twice
    assert all(len(slack.replies(CHANNEL, m.ts)) == 1 for m in messages)
    assert slack.posts == 40
    assert len({c.receipt["ts"] for c in ctxs}) == 20
    assert elapsed < 20, elapsed


async def test_a_429_pauses_only_its_channel(slack: SlackDouble) -> None:
    bot = _bot(slack, thread_detail=False)
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=1)
    with pytest.raises(DeliveryError):
        await bot.send(_page(), Ctx(slack).ctx)
    t0 = time.monotonic()
    other = Ctx(slack, target=Target(name="s", notifier="slack", channel="#search-oncall"))
    await bot.send(_page(), other.ctx)
    other_took = time.monotonic() - t0
    await bot.send(_page(), Ctx(slack).ctx)
    same_took = time.monotonic() - t0
    await bot.close()
    assert other_took < 0.5 and same_took >= 0.8, (other_took, same_took)
    assert len(slack.bot_messages(CHANNEL)) == 1


async def test_two_channels_do_not_wait_for_each_other(slack: SlackDouble) -> None:
    bot = _bot(slack, thread_detail=False, min_interval=0.3)
    done: dict[str, float] = {}
    t0 = time.monotonic()

    async def send(channel: str, key: str) -> None:
        target = Target(name="s", notifier="slack", channel=channel)
        await bot.send(_page(), Ctx(slack, target=target).ctx)
        done[key] = time.monotonic() - t0

    await asyncio.gather(
        *(send(CHANNEL, f"pay{i}") for i in range(3)), send("#search-oncall", "search")
    )
    await bot.close()
    assert done["search"] < 0.25 and done["pay2"] >= 0.55, done
    assert len(slack.bot_messages(CHANNEL)) == 3


async def test_queue_turns_are_fifo_and_spaced() -> None:
    q = ChannelQueue(0.05)
    starts: list[tuple[int, float]] = []

    async def take(i: int) -> None:
        async with q.turn("C1"):
            starts.append((i, time.monotonic()))
            await asyncio.sleep(0.001 * (5 - i))  # the first ones hold it longest

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(take(i)))
        await asyncio.sleep(0)  # arrive in order
    await asyncio.gather(*tasks)
    assert [i for i, _ in starts] == list(range(5))
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045, gaps


async def test_only_a_429_after_an_accepted_request_slows_the_channel_down() -> None:
    now = [100.0]
    q = ChannelQueue(0.0, clock=lambda: now[0])

    async def refused(retry_after: float) -> None:
        async with q.turn("C1") as lane:
            lane.pause(retry_after, now[0])

    async with q.turn("C1") as lane:
        lane.accepted()
    await refused(4)  # a request at our pace refused: back off
    spacing = q.lane("C1").spacing
    assert spacing > 0
    for _ in range(15):  # a minute of 429s: each request after the pause refused too
        now[0] = q.lane("C1").paused_until
        await refused(4)
    assert q.lane("C1").spacing == spacing
    now[0] = q.lane("C1").paused_until
    async with q.turn("C1") as lane:  # Slack takes the probe again
        lane.accepted()
    now[0] = q.lane("C1").next_at
    await refused(1)  # the next one, sent at our pace, is refused: back off further
    assert q.lane("C1").spacing > spacing


async def test_a_channel_name_and_its_id_share_one_queue() -> None:
    q = ChannelQueue(1.0)
    lane = q.lane("#payments-oncall")
    q.alias("#payments-oncall", "C0PAYMENTS")
    assert q.lane("C0PAYMENTS") is lane and q.lane("#payments-oncall") is lane
    lane.pause(5.0, q.clock())
    assert q.paused_for("#payments-oncall") > 4 and q.paused_for("C0OTHER") == 0


# --- hostile content ---------------------------------------------------------------------


def _hostile_page(value: str) -> Page:
    page = _rich_page()
    assert page.analysis is not None and page.evidence is not None
    page.labels = {**page.labels, "alertname": "<!channel> " + value, "service": value}
    page.annotations = {**page.annotations, "summary": "@here <@U123> " + value}
    page.analysis.hypotheses = [
        Hypothesis(
            statement=f"<!here> *bold* <https://evil|click> {value}",
            confidence=0.5,
            evidence_ids=[f"span:`{value}`", "<@U123>"],
            actions=["<!channel> run"],
        )
        for _ in range(60)
    ]
    page.analysis.deploys = [
        DeployVerdict(service=value, version="<!channel>", verdict="suspect", reason=value)
        for _ in range(30)
    ]
    page.evidence.missing = [Missing(what=value, source="loki", reason=value)] * 40
    for item in page.evidence.items:
        if item.log is not None:
            item.log.line = "```<!everyone> @channel " + value
    page.timings = {value: 1.0, "gather": 3.0}
    return page


def _assert_inert(msg: dict[str, Any]) -> None:
    assert problems(msg) == [], problems(msg)
    text = json.dumps(msg, ensure_ascii=False)
    for bad in (*HOSTILE, "@channel", "@everyone", "<!everyone>"):
        assert bad not in text, bad
    assert len(msg["text"]) <= 4000


def test_hostile_content_is_disarmed_in_every_builder() -> None:
    huge = "\u202e\x1b[31m<@U999> " + "y" * 100_000
    page = _hostile_page(huge)
    for msg in (
        build_message(page, PUBLIC),
        build_detail(page),
        build_resolved(page, _resolved(), PUBLIC),
        build_resolved(None, page, PUBLIC),
    ):
        _assert_inert(msg)
    detail = build_detail(page)
    assert "+50 more hypotheses" in json.dumps(detail, ensure_ascii=False)
    assert len(detail["blocks"]) <= 50


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300), st.text(max_size=50))
def test_every_built_message_passes_block_kit_checks(value: str, short: str) -> None:
    page = _hostile_page(value + short * 20)
    for msg in (
        build_message(page, PUBLIC),
        build_detail(page),
        build_resolved(page, _resolved(), PUBLIC),
    ):
        assert problems(msg) == []
        assert "<!" not in json.dumps(msg, ensure_ascii=False)


async def test_hostile_pages_are_accepted_by_the_double(
    slack: SlackDouble, bot: SlackBotNotifier
) -> None:
    page = _hostile_page("\u202e<!channel>" + "z" * 100_000)
    c = Ctx(slack)
    await bot.send(page, c.ctx)
    r = Ctx(slack, prior_receipt=dict(c.receipt), prior_page=page)
    await bot.send(_resolved(), r.ctx)
    [msg] = slack.bot_messages(CHANNEL)
    assert len(slack.replies(CHANNEL, msg.ts)) == 2
    for m in [msg, *slack.replies(CHANNEL, msg.ts)]:
        _assert_inert(m.content)


async def test_the_double_answers_as_slack_does(slack: SlackDouble) -> None:
    """What the notifier relies on: IDs and ts in answers, unknown threads and messages."""
    bot = _bot(slack)
    doc = await bot._call("chat.postMessage", CHANNEL, post_body({"text": "x"}, CHANNEL))
    assert doc["ok"] and doc["channel"] == "C0PAYMENTS"
    assert doc["ts"] == "1700000000.000100" and doc["message"]["text"] == "x"
    with pytest.raises(DeliveryError) as info:
        await bot._call("chat.postMessage", CHANNEL, post_body({"text": "x"}, CHANNEL, "1.0"))
    assert "thread_not_found" in str(info.value) and not info.value.retryable
    await bot.close()
    async with ClientSession() as http:
        answer = await http.post(
            slack.url + UPDATE,
            json={"channel": "C0PAYMENTS", "ts": "9.9", "text": "x"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert await answer.json() == {"ok": False, "error": "message_not_found"}
        answer = await http.post(slack.url + UPDATE, json={"channel": "C0PAYMENTS"})
        assert answer.status == 200 and (await answer.json())["error"] == "not_authed"
