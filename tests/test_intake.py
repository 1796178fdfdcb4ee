"""The webhook intake: what it accepts, what it refuses and how, and that it never loses one."""

from __future__ import annotations

import base64
import copy
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enricher.notify.page import NO_SOURCES
from tests.conftest import REAL, Recorder, post, service_of, wait_pages, webhook_body


async def test_recorded_notification_becomes_a_page_within_its_deadline(make_client):
    client = await make_client()
    body = (REAL / "alertmanager-webhook-0.json").read_bytes()
    resp = await post(client, body)
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"
    [page] = await wait_pages(client, 1)
    assert page["status"] == "firing"
    assert page["labels"]["alertname"] == "CheckoutHighLatency"
    assert page["annotations"]["summary"] == "Checkout p99 latency above 500ms"
    assert page["runbook_url"] == "https://runbooks.example.com/payments/checkout-latency"
    # No evidence source is configured here: the page says so, and is not degraded for it.
    assert page["degraded"] is False
    assert page["reasons"] == [NO_SOURCES]
    assert page["paged_at"] <= page["deadline"]
    for key in ("id", "received_at", "paged_at", "labels", "annotations", "reasons"):
        assert key in page
    one = await (await client.get(f"/api/v1/pages/{page['id']}")).json()
    assert one["id"] == page["id"] and one["title"] == page["title"]


async def test_malformed_json_is_400_naming_the_problem(make_client):
    client = await make_client()
    resp = await post(client, b"{")
    assert resp.status == 400
    doc = await resp.json()
    assert doc["error"] == "invalid"
    assert "malformed JSON" in doc["message"]


async def test_json_array_is_400(make_client):
    client = await make_client()
    resp = await post(client, b"[1, 2]")
    assert resp.status == 400
    assert "JSON object" in (await resp.json())["message"]


async def test_missing_alerts_is_400_with_the_field_path(make_client):
    client = await make_client()
    body = webhook_body()
    del body["alerts"]
    resp = await post(client, body)
    assert resp.status == 400
    doc = await resp.json()
    assert doc["problems"][0]["path"] == "alerts"


async def test_version_3_is_refused_as_unsupported(make_client):
    client = await make_client()
    resp = await post(client, webhook_body(version="3"))
    assert resp.status == 400
    doc = await resp.json()
    assert doc["problems"][0]["path"] == "version"
    assert "unsupported webhook version" in doc["message"]


async def test_non_rfc3339_time_is_400_naming_the_alert_field(make_client):
    client = await make_client()
    for bad in (
        "2026-11-27 16:20:37",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        1764260437,
    ):
        resp = await post(client, webhook_body(alert={"startsAt": bad}))
        assert resp.status == 400, bad
        doc = await resp.json()
        assert doc["problems"][0]["path"] == "alerts.0.startsAt", doc


async def test_nanosecond_and_offset_timestamps_are_accepted(make_client):
    client = await make_client()
    for ts in ("2025-05-01T12:00:00.123456789Z", "2025-05-01T14:00:00+02:00"):
        resp = await post(client, webhook_body(alert={"startsAt": ts}))
        assert resp.status == 200, await resp.text()


async def test_empty_body_is_400(make_client):
    client = await make_client()
    resp = await post(client, b"")
    assert resp.status == 400
    assert (await resp.json())["error"] == "empty_body"


async def test_wrong_content_type_is_415(make_client):
    client = await make_client()
    resp = await post(client, json.dumps(webhook_body()), headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert "application/json" in (await resp.json())["message"]


async def test_body_over_the_limit_is_413_and_nothing_is_stored(make_client):
    client = await make_client({"intake": {"max_body_bytes": 4096}})
    body = webhook_body(alert={"annotations": {"description": "x" * 5000}})
    resp = await post(client, body)
    assert resp.status == 413
    assert "intake.max_body_bytes" in (await resp.json())["message"]
    assert await service_of(client).store.backlog() == 0


async def test_ten_thousand_alerts_in_one_body_make_one_readable_page(make_client):
    client = await make_client()
    body = webhook_body()
    template = body["alerts"][0]
    body["alerts"] = []
    for i in range(10_000):
        a = copy.deepcopy(template)
        a["labels"]["pod"] = f"checkout-{i}"
        a["fingerprint"] = f"{i:016x}"
        body["alerts"].append(a)
    resp = await post(client, body)
    assert resp.status == 200
    [page] = await wait_pages(client, 1, timeout=20)
    assert page["alert_count"] == 10_000
    assert len(page["alerts"]) == 20
    assert page["truncated_alerts"] == 10_000 - 20


async def test_hostile_label_values_are_cleaned_and_bounded_on_the_page(make_client):
    """Controls and terminal escapes never reach people; the stored notification keeps the
    raw values (and is what the idempotency key is computed from)."""
    client = await make_client()
    huge = "A" * 100_000
    common = webhook_body()["commonLabels"]
    body = webhook_body(
        commonLabels={**common, "alertname": "X\u0000\u001b[31mred\u0007"},
        alert={
            "labels": {
                "alertname": "X\u0000\u001b[31mred\u0007",
                "emoji": "🔥💥",
                "huge": huge,
                "severity": "critical",
            }
        },
    )
    resp = await post(client, body)
    assert resp.status == 200
    [page] = await wait_pages(client, 1)
    labels = page["alerts"][0]["labels"]
    assert labels["emoji"] == "🔥💥"
    assert labels["alertname"] == "Xred"
    assert page["title"].startswith("[CRITICAL] Xred")
    assert 1000 <= len(labels["huge"]) <= 1024
    # The stored notification keeps the value whole and raw; only the page view is cleaned.
    svc = service_of(client)
    raw = await svc.store.notification_body(page["id"])
    assert raw is not None and huge in raw.decode()
    assert "X\\u0000\\u001b[31mred\\u0007" in raw.decode()


async def test_duplicate_delivery_pages_once(make_client):
    rec = Recorder()
    client = await make_client(notifiers=[rec])
    body = webhook_body()
    first = await post(client, body)
    second = await post(client, body)
    assert (await first.json())["status"] == "accepted"
    doc = await second.json()
    assert second.status == 200 and doc["status"] == "duplicate"
    await wait_pages(client, 1)
    assert len(rec.pages) == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'enricher_notifications_total{outcome="duplicate"} 1.0' in metrics


async def test_ha_alertmanager_pair_pages_once(make_client):
    """The peer sends the same notification with its own externalURL: still one page."""
    rec = Recorder()
    client = await make_client(notifiers=[rec])
    a = webhook_body(externalURL="http://am-0:9093")
    b = webhook_body(externalURL="http://am-1:9093")
    assert (await (await post(client, a)).json())["status"] == "accepted"
    assert (await (await post(client, b)).json())["status"] == "duplicate"
    await wait_pages(client, 1)
    assert len(rec.pages) == 1


async def test_new_firing_of_the_same_group_pages_again(make_client):
    client = await make_client()
    await post(client, webhook_body())
    await post(client, webhook_body(alert={"startsAt": "2026-11-27T18:00:00Z"}))
    pages = await wait_pages(client, 2)
    assert len(pages) == 2


async def test_resolved_notification_marks_the_firing_page_resolved(make_client):
    client = await make_client()
    await post(client, webhook_body())
    [firing] = await wait_pages(client, 1)
    resolved = webhook_body(
        status="resolved", alert={"status": "resolved", "endsAt": "2026-11-27T16:30:00Z"}
    )
    resp = await post(client, resolved)
    assert (await resp.json())["status"] == "accepted"
    pages = await wait_pages(client, 2)
    newest, original = pages
    assert newest["status"] == "resolved" and newest["resolves"] == firing["id"]
    assert newest["title"].startswith("[RESOLVED]")
    assert original["status"] == "resolved"
    assert original["resolved_by"] == newest["id"]


async def test_resolved_before_firing_is_paged_not_dropped(make_client):
    rec = Recorder()
    client = await make_client(notifiers=[rec])
    resolved = webhook_body(
        status="resolved", alert={"status": "resolved", "endsAt": "2026-11-27T16:30:00Z"}
    )
    assert (await post(client, resolved)).status == 200
    [page] = await wait_pages(client, 1)
    assert page["status"] == "resolved" and page["resolves"] is None
    assert [p.status for p in rec.pages] == ["resolved"]


async def test_bearer_auth_refuses_missing_and_wrong_tokens(make_client):
    client = await make_client({"intake": {"auth": {"bearer_token": "s3cret-token"}}})
    body = webhook_body()
    missing = await post(client, body)
    wrong = await post(client, body, headers={"Authorization": "Bearer s3cret-tokeN"})
    right = await post(client, body, headers={"Authorization": "Bearer s3cret-token"})
    assert missing.status == 401 and wrong.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert right.status == 200
    assert await service_of(client).store.backlog() == 1


async def test_basic_auth_as_alertmanager_sends_it(make_client, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    client = await make_client(
        {"intake": {"auth": {"basic": {"username": "am", "password_file": str(pw)}}}}
    )
    good = "Basic " + base64.b64encode(b"am:hunter2").decode()
    bad = "Basic " + base64.b64encode(b"am:hunter3").decode()
    assert (await post(client, webhook_body(), headers={"Authorization": bad})).status == 401
    assert (await post(client, webhook_body(), headers={"Authorization": good})).status == 200


async def test_store_that_cannot_commit_answers_503_never_2xx(make_client):
    client = await make_client()
    svc = service_of(client)
    assert (await post(client, webhook_body())).status == 200
    await svc.store._test_limit_pages()  # the database file can no longer grow: "disk full"
    body = webhook_body(alert={"startsAt": "2026-11-27T18:00:00Z"})
    # Incompressible, so the stored body needs new database pages.
    body["alerts"][0]["annotations"]["description"] = os.urandom(100_000).hex()
    resp = await post(client, body)
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"
    count = await svc.store._read(
        lambda c: c.execute("SELECT count(*) FROM notifications").fetchone()[0]
    )
    assert count == 1


async def test_backlog_over_its_limit_answers_503_for_retry(make_client):
    client = await make_client({"intake": {"max_backlog": 1}, "pipeline": {"workers": 1}})
    svc = service_of(client)
    await svc.pipeline.stop(0)  # nothing drains the backlog
    assert (await post(client, webhook_body())).status == 200
    resp = await post(client, webhook_body(alert={"startsAt": "2026-11-27T18:00:00Z"}))
    assert resp.status == 503
    assert resp.headers["Retry-After"]


async def test_shutting_down_answers_503(make_client):
    client = await make_client()
    service_of(client).intake.draining = True
    resp = await post(client, webhook_body())
    assert resp.status == 503
    assert (await client.get("/readyz")).status == 503


async def test_health_ready_and_metrics_endpoints(make_client):
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await post(client, webhook_body())
    await post(client, b"{")
    await wait_pages(client, 1)
    text = await (await client.get("/metrics")).text()
    for name in (
        'enricher_notifications_total{outcome="accepted"} 1.0',
        'enricher_notifications_rejected_total{reason="invalid"} 1.0',
        "enricher_backlog_jobs",
        'enricher_stage_seconds_bucket{le="0.005",stage="gather"}',
        'enricher_deliveries_total{notifier="log",outcome="sent"} 1.0',
        "enricher_pages_past_deadline_total",
        "enricher_intake_ack_seconds_count 1.0",
    ):
        assert name in text, name


async def test_unknown_page_is_404_and_bad_id_is_400(make_client):
    client = await make_client()
    assert (await client.get("/api/v1/pages/999")).status == 404
    assert (await client.get("/api/v1/pages/abc")).status == 400


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[bytes]:
    base = webhook_body()
    keys = list(base) + ["alerts.0." + k for k in base["alerts"][0]]

    def mutate(key: str, value: object) -> bytes:
        b = copy.deepcopy(base)
        if key.startswith("alerts.0."):
            b["alerts"][0][key[len("alerts.0.") :]] = value
        else:
            b[key] = value
        return json.dumps(b).encode()

    return st.builds(mutate, st.sampled_from(keys), _json)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()) | _mutations())
async def test_fuzzed_bodies_never_yield_a_500(make_client, body):
    client = getattr(test_fuzzed_bodies_never_yield_a_500, "_client", None)
    if client is None or client.server.app is None:
        client = await make_client()
        test_fuzzed_bodies_never_yield_a_500._client = client  # type: ignore[attr-defined]
    resp = await post(client, body)
    assert resp.status in (200, 400), (resp.status, body[:200])


async def test_deploy_events_are_recorded_validated_and_authenticated(make_client):
    from datetime import UTC, datetime, timedelta

    from enricher.intake.deploys import StoredDeploys

    client = await make_client({"intake": {"auth": {"bearer_token": "ci-token"}}})
    auth = {"Authorization": "Bearer ci-token"}
    event = {
        "service": "checkout",
        "version": "2.4.1",
        "commit": "7a3f9c2",
        "environment": "prod",
        "time": "2026-11-27T16:16:00Z",
    }
    url = "/api/v1/deploys"
    assert (await client.post(url, json=event)).status == 401
    bad = await client.post(url, json={**event, "time": "soon"}, headers=auth)
    assert bad.status == 400 and (await bad.json())["problems"][0]["path"] == "time"
    ok = await client.post(url, json=event, headers=auth)
    assert ok.status == 201
    source = StoredDeploys(service_of(client).store)
    t = datetime(2026, 11, 27, 16, 20, tzinfo=UTC)
    [found] = await source.recent("checkout", t - timedelta(minutes=10), t)
    assert found.version == "2.4.1" and found.commit == "7a3f9c2"
    assert await source.recent("payments", t - timedelta(minutes=10), t) == []


def test_severity_is_the_most_urgent_and_ties_break_the_same_way_every_time():
    from enricher.intake.webhook import WebhookMessage

    body = webhook_body()
    base = body["alerts"][0]
    body["alerts"] = [
        dict(base, labels=dict(base["labels"], severity=s), fingerprint=f"{i:016x}")
        for i, s in enumerate(["warning", "page", "info", "critical", "weird"])
    ]
    assert WebhookMessage.model_validate(body).severity() == "critical"
    body["alerts"] = [dict(base, labels={"alertname": "x"})]
    assert WebhookMessage.model_validate(body).severity() == ""
