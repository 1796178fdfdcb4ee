"""The PagerDuty notifier: the event (golden), and the service delivering to a PagerDuty
double that validates events as the real Events API v2 documents."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from enricher.analysis.hypotheses import analyse_bundle
from enricher.intake.webhook import WebhookMessage
from enricher.notify.page import Page, build_page
from enricher.notify.pagerduty import MAX_EVENT_BYTES, build_event
from enricher.pipeline.stages import GatherInput, GatherOutput
from tests.conftest import MakeClient, checkout_bundle, post, wait_pages, webhook_body
from tests.doubles.pagerduty import PATH, PagerDutyDouble

GOLDEN = Path(__file__).parent / "golden"
KEY = "0123456789abcdef0123456789abcdef"
SEVERITIES = {"critical": "critical", "warning": "warning"}


def _page(**body_changes: Any) -> Page:
    msg = WebhookMessage.model_validate(webhook_body(**body_changes))
    bundle = checkout_bundle()
    return build_page(
        7,
        msg,
        received_at=1_900_000_000.0,
        deadline=1_900_000_030.0,
        reasons=[],
        evidence=bundle,
        analysis=analyse_bundle(bundle),
    )


def _golden(name: str, doc: Any) -> None:
    path = GOLDEN / name
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; UPDATE_GOLDEN=1 rewrites it"


def test_trigger_event_for_the_checkout_incident_matches_its_golden_file() -> None:
    ev = build_event(_page(), KEY, SEVERITIES, "error", public_url="https://enricher.example")
    doc = json.loads(ev.body())
    _golden("pagerduty-checkout-trigger.json", doc)
    p = doc["payload"]
    assert p["summary"].startswith("db-primary `SELECT orders` took 1.21 s")
    assert p["component"] == "db-primary" and p["class"] == "CheckoutHighErrorRate"
    assert p["severity"] == "critical" and p["group"] == "payments"
    assert doc["links"][0]["href"] == "https://enricher.example/pages/7"


def test_resolve_uses_the_same_dedup_key_and_nothing_else() -> None:
    firing = build_event(_page(), KEY, SEVERITIES, "error")
    resolved = build_event(_page(status="resolved"), KEY, SEVERITIES, "error")
    assert json.loads(resolved.body()) == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": firing.dedup_key,
    }


def test_hostile_values_stay_inside_the_limits() -> None:
    huge = "x" * 100_000
    page = _page(
        commonLabels={
            **webhook_body()["commonLabels"],
            "huge": huge,
        },
        commonAnnotations={"summary": "<!channel> \u202e" + huge, "runbook_url": "javascript:x"},
    )
    page.severity = "weird"
    ev = build_event(page, KEY, SEVERITIES, "error")
    body = ev.body()
    assert len(body.encode()) < MAX_EVENT_BYTES
    assert ev.payload is not None and len(ev.payload.summary) <= 1024
    assert ev.payload.severity == "error"  # unmapped severities take the default
    assert all(not link.href.startswith("javascript:") for link in ev.links or [])


class _Gatherer:
    async def gather(self, inp: GatherInput) -> GatherOutput:
        return GatherOutput(bundle=checkout_bundle())


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyDouble]:
    d = PagerDutyDouble()
    await d.start()
    yield d
    await d.stop()


def _config(pd: PagerDutyDouble) -> dict[str, Any]:
    return {
        "notifiers": {
            "log": {"enabled": False},
            "pagerduty": {"routing_key": KEY, "url": pd.endpoint},
        }
    }


async def test_firing_then_resolved_trigger_and_resolve_one_alert(
    make_client: MakeClient, pd: PagerDutyDouble
) -> None:
    client = await make_client(_config(pd), gatherer=_Gatherer())
    assert (await post(client, webhook_body())).status == 200
    await wait_pages(client, 1)
    assert (await post(client, webhook_body())).status == 200  # Alertmanager re-sends
    resolved = webhook_body(status="resolved")
    resolved["alerts"][0].update(status="resolved", endsAt="2026-11-27T16:40:37.704Z")
    assert (await post(client, resolved)).status == 200
    await wait_pages(client, 2)
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"], pd.rejected
    assert pd.events[0]["dedup_key"] == pd.events[1]["dedup_key"]
    assert pd.events[0]["payload"]["component"] == "db-primary"
    # the routing key is the credential: never on a page
    pages = await (await client.get("/api/v1/pages")).text()
    assert KEY not in pages


async def test_a_rejected_event_is_not_retried_and_a_429_is(
    make_client: MakeClient, pd: PagerDutyDouble
) -> None:
    pd.inject(PATH, status=400, times=1, body='{"status":"invalid event","message":"x"}')
    client = await make_client(_config(pd), gatherer=_Gatherer())
    assert (await post(client, webhook_body())).status == 200
    [page] = await wait_pages(client, 1)
    assert pd.count(PATH) == 1 and pd.events == []
    assert page["deliveries"][0]["state"] == "failed", page["deliveries"]

    pd.inject(PATH, status=429, times=1, body="slow down")
    other = webhook_body(groupKey="other-group")
    assert (await post(client, other)).status == 200
    await wait_pages(client, 2, timeout=15)
    assert pd.count(PATH) == 3 and len(pd.events) == 1  # 429, then accepted
