"""Hardening found by trying the service as a hostile client and as a second replica would:
bodies whose encoding lies, refusal storms in the log, idempotency keys that collide across
data directories, and unsafe values that must not reach a page or a receiver."""

from __future__ import annotations

import gzip
import json
import logging

from aiohttp import web

from enricher.intake.webhook import WebhookMessage
from enricher.notify.page import build_page
from enricher.sanitize import clean_text, safe_url
from tests.conftest import post, service_of, wait_pages, webhook_body
from tests.test_pipeline import receiver


def _gzip_headers() -> dict[str, str]:
    # Connection: close: a body the parser could not decode leaves that connection unusable.
    return {"Content-Encoding": "gzip", "Connection": "close"}


async def test_a_body_labelled_gzip_that_is_not_gzip_is_400_not_503(make_client, caplog):
    client = await make_client()
    resp = await post(client, b'{"version": "4"}', headers=_gzip_headers())
    assert resp.status == 400
    doc = await resp.json()
    assert doc["error"] == "bad_encoding" and "gzip" in doc["message"]
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's mistake"
    # A real gzip body still works, and the refusal stored nothing.
    good = gzip.compress(json.dumps(webhook_body()).encode())
    resp = await post(client, good, headers=_gzip_headers())
    assert resp.status == 200 and (await resp.json())["id"] == 1


async def test_deploy_endpoint_refuses_a_lying_encoding_with_400(make_client):
    client = await make_client()
    resp = await client.post(
        "/api/v1/deploys",
        data=b"plain text",
        headers={"Content-Type": "application/json", **_gzip_headers()},
    )
    assert resp.status == 400


async def test_a_storm_of_refusals_logs_a_few_lines_with_the_count(make_client, caplog):
    client = await make_client()
    service_of(client).intake.draining = True
    caplog.set_level(logging.WARNING, logger="enricher.intake")
    for i in range(200):
        resp = await post(client, webhook_body(groupKey=f"g{i}"))
        assert resp.status == 503
    lines = [r for r in caplog.records if r.getMessage() == "notification refused for retry"]
    assert len(lines) == 1, "one line per reason per 10 s, not one per refused request"
    assert lines[0].reason == "shutting_down"
    # The next line for that reason reports how many were held back.
    refusals = service_of(client).intake._refusals
    refusals._last = {k: v - 60 for k, v in refusals._last.items()}
    await post(client, webhook_body(groupKey="late"))
    lines = [r for r in caplog.records if r.getMessage() == "notification refused for retry"]
    assert len(lines) == 2 and lines[1].suppressed == 199


async def test_idempotency_key_is_the_notifications_identity_across_data_directories(
    make_client,
):
    """Two data directories (two replicas, or one wiped) both number their first page 1: the
    receiver must see the same key for the same notification and different ones otherwise."""
    keys: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        keys.append(request.headers["Idempotency-Key"])
        return web.json_response({"ok": True})

    async with receiver(hook) as url:
        over = {"notifiers": {"log": {"enabled": False}, "webhook": {"url": url}}}
        first = await make_client(over)
        second = await make_client(over)
        same = webhook_body()
        other = webhook_body(groupKey="another-group")
        assert (await post(first, same)).status == 200
        await wait_pages(first, 1)
        assert (await post(second, other)).status == 200  # page 1 of the second directory
        await wait_pages(second, 1)
        assert (await post(second, same)).status == 200  # page 2 there, same notification
        await wait_pages(second, 2)
        resolved = webhook_body(status="resolved", alert={"status": "resolved"})
        assert (await post(first, resolved)).status == 200
        await wait_pages(first, 2)
    assert len(keys) == 4
    assert keys[0] == keys[2], "the same notification has one key wherever it is paged"
    assert keys[1] != keys[0], "page 1 of another directory is another notification"
    assert keys[3] not in keys[:3], "its resolution is a different notification"
    assert all(k.startswith("enricher-") and "page-" not in k for k in keys)


def test_unsafe_urls_never_reach_the_page():
    annotations = {
        **webhook_body()["commonAnnotations"],
        "runbook_url": "javascript:alert(1)",
        "dashboard_url": "data:text/html,<script>alert(1)</script>",
    }
    msg = WebhookMessage.model_validate(
        webhook_body(commonAnnotations=annotations, externalURL="javascript:alert(2)")
    )
    page = build_page(1, msg, received_at=0.0, deadline=30.0, reasons=[])
    assert page.runbook_url is None and page.dashboard_url is None
    assert all(not a.generator_url.startswith("javascript") for a in page.alerts)
    good = {**annotations, "runbook_url": "https://runbooks.example.com/x?a=1&b=2"}
    msg = WebhookMessage.model_validate(webhook_body(commonAnnotations=good))
    page = build_page(1, msg, received_at=0.0, deadline=30.0, reasons=[])
    assert page.runbook_url == "https://runbooks.example.com/x?a=1&b=2"


def test_clean_text_strips_terminal_escapes_whole_and_keeps_real_text():
    assert clean_text("\x1b[31mred\x1b[0m") == "red"
    assert clean_text("a\x1b]8;;https://evil\x07link\x1b]8;;\x07b") == "alinkb"  # OSC hyperlink
    assert clean_text("x\u202egnp.exe\u200b") == "xgnp.exe"  # bidi override, zero width
    assert clean_text("tab\tand\nnewline\x00\x7f") == "tab\tand\nnewline"
    assert clean_text("line\none", one_line=True) == "line one"
    assert clean_text("日本語 🔥 ümlaut") == "日本語 🔥 ümlaut"


def test_safe_url_keeps_only_absolute_http_urls():
    for bad in (
        "javascript:alert(1)",
        " javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "vbscript:x",
        "//evil.example/x",
        "https://",
        "https://ex ample.com",
        "https://example.com/\x00",
        "file:///etc/passwd",
    ):
        assert safe_url(bad) is None, bad
    assert safe_url("https://grafana.example/d/x?var-service=checkout") is not None
    assert safe_url("http://10.0.0.1:3000/x") == "http://10.0.0.1:3000/x"


async def test_metrics_can_require_the_read_credentials_while_probes_stay_open(make_client):
    reader = {"Authorization": "Bearer reader"}
    client = await make_client(
        {"api": {"auth": {"bearer_token": "reader"}, "protect_metrics": True}}
    )
    resp = await client.get("/metrics")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "enricher_" not in await resp.text()
    resp = await client.get("/metrics", headers=reader)
    assert resp.status == 200 and "enricher_" in await resp.text()
    assert (await client.get("/api/v1/pages")).status == 401
    for path in ("/healthz", "/readyz"):
        assert (await client.get(path)).status == 200, path


def test_start_up_warns_when_pages_are_readable_beyond_loopback():
    from enricher.config import load_config

    for listen in ("127.0.0.1:8080", "[::1]:8080", "localhost:8080"):
        assert load_config(environ={}, overrides={"listen": listen}).exposure_warnings() == []
    warnings = load_config(environ={}, overrides={"listen": "0.0.0.0:8080"}).exposure_warnings()
    assert len(warnings) == 2 and "api.auth" in warnings[0] and "intake.auth" in warnings[1]
    guarded = load_config(
        environ={"ENRICHER_INTAKE__AUTH__BEARER_TOKEN": "t"}, overrides={"listen": ":8080"}
    )
    assert guarded.exposure_warnings() == [], "the intake's credentials guard reading too"


async def test_a_page_without_evidence_sources_says_why_it_has_no_evidence(make_client):
    from enricher.notify.pagerduty import build_event
    from enricher.notify.slack import build_message

    client = await make_client()  # no sources configured
    assert (await post(client, webhook_body())).status == 200
    [doc] = await wait_pages(client, 1)
    assert doc["evidence"] is None and doc["degraded"] is False
    assert len(doc["reasons"]) == 1 and "no evidence source" in doc["reasons"][0]
    from enricher.notify.page import Page

    page = Page.model_validate(doc)
    context = build_message(page)["blocks"][-1]
    assert context["type"] == "context"
    assert any("no evidence source" in e["text"] for e in context["elements"])
    details = build_event(page, "k", {}, "error").payload.custom_details  # type: ignore[union-attr]
    assert "sources.prometheus" in details["evidence"]
    # Gathering that failed says so itself, and the note does not pile on.
    page.reasons, page.degraded = ["gather timed out after 8s"], True
    context = build_message(page)["blocks"][-1]
    assert not any("no evidence source" in e["text"] for e in context["elements"])
