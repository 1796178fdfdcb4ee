"""The Alertmanager forward notifier: the postable alerts (golden), hostile values, the client's
URL and credentials, the intake's loop guard, the documented route (checked by `amtool`), and
on a real Alertmanager 0.25 with that route: one enriched alert reaches the team's receiver
once, and nothing loops back to the enricher."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from enricher.bundle.model import EvidenceItem, Link
from enricher.config import AlertmanagerForwardConfig, load_config
from enricher.intake.webhook import WebhookMessage
from enricher.notify import build_notifiers
from enricher.notify.alertmanager import (
    FIRING_HOLD,
    AlertmanagerForwarder,
    alerts_url,
    build_alerts,
)
from enricher.notify.base import DeliveryError, SendContext
from enricher.notify.page import Page
from enricher.notify.routing import Target
from enricher.pipeline.stages import GatherInput, GatherOutput
from enricher.sources.deploys import DeployContext
from enricher.sources.loki import LogLine
from tests.conftest import (
    REPO,
    MakeClient,
    Recorder,
    checkout_bundle,
    post,
    wait_pages,
    webhook_body,
)
from tests.doubles._server import DoubleServer
from tests.notify.test_pagerduty import _golden, _page
from tests.realstack import REAL_STACK, Alertmanager

PUBLIC = "https://enricher.example"
PAGED_AT = datetime(2026, 11, 27, 16, 21, 0, tzinfo=UTC)
DOC = REPO / "docs" / "alertmanager-forward.md"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def _config(**kw: Any) -> AlertmanagerForwardConfig:
    return AlertmanagerForwardConfig.model_validate({"url": "http://am:9093", **kw})


def _fixed(page: Page) -> Page:
    page.paged_at = PAGED_AT  # the only clock `build_alerts` reads
    return page


# --- the postable alerts ------------------------------------------------------------------


def test_alerts_for_the_checkout_incident_match_their_golden_file() -> None:
    alerts = build_alerts(_fixed(_page()), _config(), PUBLIC)
    _golden("alertmanager-checkout-forward.json", alerts)
    [a] = alerts
    assert a["labels"] == {
        "alertname": "CheckoutHighErrorRate",
        "service": "checkout",
        "severity": "critical",
        "team": "payments",
        "enriched": "true",
    }
    ann = a["annotations"]
    assert ann["enricher_hypothesis"].startswith("db-primary `SELECT orders` took 1.21 s")
    assert ann["enricher_confidence"] == "0.90"
    assert ann["enricher_suspect_span"].startswith("db-primary SELECT orders 1210 ms (error)")
    assert ann["enricher_page_url"] == "https://enricher.example/pages/7"
    assert ann["summary"] == "Checkout 5xx rate is above 5%"  # the original's are kept
    assert a["startsAt"] == "2026-11-27T16:20:37.704000Z"
    # Firing: an explicit end far enough away that Alertmanager's resolve_timeout never ends
    # the copy while the original still fires.
    assert a["endsAt"] == (PAGED_AT + FIRING_HOLD).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert a["generatorURL"].startswith("http://vm:9090/graph?g0.expr=")


def test_a_resolved_alert_ends_at_its_own_end_so_the_resolve_reaches_downstream() -> None:
    page = _fixed(
        _page(status="resolved", alert={"status": "resolved", "endsAt": "2026-11-27T16:40:37Z"})
    )
    [a] = build_alerts(page, _config(), PUBLIC)
    assert a["endsAt"] == "2026-11-27T16:40:37.000000Z"
    assert a["labels"]["enriched"] == "true"
    # Same labels as the firing copy: Alertmanager resolves that alert, not a new one.
    [firing] = build_alerts(_fixed(_page()), _config(), PUBLIC)
    assert a["labels"] == firing["labels"]


def test_every_evidence_annotation_when_the_page_has_it_and_none_it_lacks() -> None:
    page = _fixed(_page())
    b = page.evidence
    assert b is not None and b.culprit is not None
    b.items.append(
        EvidenceItem(
            id="log:0",
            kind="log",
            source="loki",
            priority=1,
            summary="log line",
            log=LogLine(ts_ns=1, line="ERROR canceling statement due to statement timeout"),
        )
    )
    b.culprit.log_item_ids = ["log:0"]
    b.links.append(
        Link(kind="grafana_trace", title="trace", url="https://grafana.example/explore?t=1")
    )
    b.deploy.append(
        DeployContext(
            service="db-primary",
            current_version="v2.4.1",
            current_commit="abc1234",
            minutes_before_alert=7,
            summary="db-primary v2.4.1 (abc1234) deployed 7 minutes before the alert started",
        )
    )
    page.analysis = None  # without an analysis the nearest deploy is shown
    page.degraded, page.reasons = True, ["tempo: timeout after 2s", "loki: HTTP 500"]
    [a] = build_alerts(page, _config(annotation_prefix="ev_"), None)
    ann = {k: v for k, v in a["annotations"].items() if k.startswith("ev_")}
    assert ann == {
        "ev_suspect_span": ann["ev_suspect_span"],
        "ev_deploy": "db-primary v2.4.1 (abc1234) deployed 7 minutes before the alert started",
        "ev_log": "ERROR canceling statement due to statement timeout",
        "ev_trace_url": "https://grafana.example/explore?t=1",
        "ev_degraded": "tempo: timeout after 2s; loki: HTTP 500",
    }  # no hypothesis (no analysis), no page_url (no public_url)

    bare = _fixed(_page())
    bare.evidence, bare.analysis = None, None
    [a] = build_alerts(bare, _config(), None)
    assert not any(k.startswith("enricher_") for k in a["annotations"])


def test_hostile_values_are_cleaned_bounded_and_cannot_pose_as_evidence() -> None:
    huge = "x" * 100_000
    page = _fixed(
        _page(
            alert={
                "labels": {
                    "alertname": "Hostile\x00\u202e\x1b[31m",
                    "team": "payments",
                    "enriched": "false",  # the marker is ours to set
                    "bad-name": "refused by Alertmanager",
                    "empty": "",
                    "huge": huge,
                },
                "annotations": {
                    "summary": "a\x07b\u2066c\ud800d\nsecond line",
                    "enricher_hypothesis": "forged: it was DNS",
                    "enricher_stale": "from an older round",
                },
                "generatorURL": "javascript:alert(1)",
            }
        )
    )
    assert page.analysis is not None
    page.analysis.hypotheses[0].statement = "cause\n\x1b[2J\u202eevil " + huge
    page.degraded, page.reasons = True, ["x\x00y" * 1000]
    [a] = build_alerts(page, _config(), "https://enricher.example/")
    body = json.dumps([a], ensure_ascii=False)
    body.encode("utf-8")  # no lone surrogate left: the body can be sent
    for bad in ("\x00", "\x07", "\x1b", "\u202e", "\u2066", "\ud800"):
        assert bad not in body, repr(bad)
    labels, ann = a["labels"], a["annotations"]
    assert labels["alertname"] == "Hostile" and labels["enriched"] == "true"
    assert "bad-name" not in labels and "empty" not in labels
    assert all(len(v) <= 1024 for v in (*labels.values(), *ann.values()))
    assert ann["summary"] == "abcd\nsecond line"  # multi-line descriptions stay multi-line
    assert ann["enricher_hypothesis"].startswith("cause evil xxx")  # ours: one line
    assert "enricher_stale" not in ann and "forged" not in body
    assert ann["enricher_page_url"] == "https://enricher.example/pages/7"
    assert "generatorURL" not in a


def test_an_end_before_the_start_is_moved_to_the_start() -> None:
    page = _fixed(
        _page(
            status="resolved",
            alert={
                "status": "resolved",
                "startsAt": "2026-11-27T16:20:37Z",
                "endsAt": "2026-11-27T16:00:00Z",
            },
        )
    )
    [a] = build_alerts(page, _config(), None)
    assert a["endsAt"] == a["startsAt"]


def test_one_alert_per_listed_alert_of_the_group() -> None:
    body = webhook_body()
    first = body["alerts"][0]
    body["alerts"] = [
        {**first, "labels": {**first["labels"], "pod": f"checkout-{i}"}, "fingerprint": f"{i:016x}"}
        for i in range(30)
    ]
    msg = WebhookMessage.model_validate(body)
    from enricher.notify.page import MAX_LISTED_ALERTS, build_page

    page = build_page(7, msg, received_at=0.0, deadline=30.0, reasons=[])
    alerts = build_alerts(page, _config(), None)
    assert len(alerts) == MAX_LISTED_ALERTS
    assert len({a["labels"]["pod"] for a in alerts}) == MAX_LISTED_ALERTS


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/alertmanager", "http://am:9093/alertmanager/api/v2/alerts"),
        ("http://am:9093/alertmanager/", "http://am:9093/alertmanager/api/v2/alerts"),
        ("https://am.example/api/v2/alerts", "https://am.example/api/v2/alerts"),
    ],
)
def test_the_endpoint_with_or_without_slash_or_prefix(base: str, url: str) -> None:
    assert alerts_url(str(_config(url=base).url)) == url


# --- the client, against a double of the endpoint -----------------------------------------


class AlertsEndpoint(DoubleServer):
    """`POST /api/v2/alerts` under a path prefix: records the JSON list it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[list[dict[str, Any]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/am/api/v2/alerts", self._alerts)

    async def _alerts(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.posts.append(await request.json())
        return web.Response(status=200)


@pytest.fixture
async def endpoint() -> AsyncIterator[AlertsEndpoint]:
    d = AlertsEndpoint()
    await d.start()
    yield d
    await d.stop()


def _ctx() -> SendContext:
    return SendContext(target=Target(name="alertmanager", notifier="alertmanager"))


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({}, None),
        ({"bearer_token": "s3cret"}, "Bearer s3cret"),
        (
            {"basic": {"username": "enricher", "password": "pw:1"}},
            "Basic " + base64.b64encode(b"enricher:pw:1").decode(),
        ),
    ],
)
async def test_posts_the_json_list_with_the_configured_credentials(
    endpoint: AlertsEndpoint, auth: dict[str, Any], header: str | None
) -> None:
    fwd = AlertmanagerForwarder(_config(url=endpoint.url + "/am/", **auth), PUBLIC)
    try:
        await fwd.send(_fixed(_page()), _ctx())
    finally:
        await fwd.close()
    [alerts] = endpoint.posts
    assert alerts == build_alerts(_fixed(_page()), fwd.config, PUBLIC)
    headers = endpoint.requests[-1][3]
    assert headers.get("Authorization") == header


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (503, True)])
async def test_a_refusal_is_permanent_and_overload_is_retried(
    endpoint: AlertsEndpoint, status: int, retryable: bool
) -> None:
    endpoint.inject("/am/", status=status, body="bad alert")
    fwd = AlertmanagerForwarder(_config(url=endpoint.url + "/am"), PUBLIC)
    try:
        with pytest.raises(DeliveryError) as err:
            await fwd.send(_fixed(_page()), _ctx())
    finally:
        await fwd.close()
    assert err.value.retryable is retryable


def test_build_notifiers_registers_the_forwarder() -> None:
    config = load_config(
        environ={}, overrides={"notifiers": {"alertmanager": {"url": "http://am:9093"}}}
    )
    names = [n.name for n in build_notifiers(config)]
    assert names == config.notifiers.names() == ["log", "alertmanager"]


# --- the intake's loop guard --------------------------------------------------------------


def _marked(body: dict[str, Any], label: str = "enriched") -> dict[str, Any]:
    for a in body["alerts"]:
        a["labels"] = {**a["labels"], label: "true"}
    body["commonLabels"] = {**body["commonLabels"], label: "true"}
    return body


async def _metric(client: Any, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m is not None, name
    return float(m.group(1))


async def test_a_notification_of_enriched_alerts_is_acknowledged_and_not_paged(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    client = await make_client(notifiers=[rec])
    caplog.set_level("INFO", logger="enricher.intake")
    resp = await post(client, _marked(webhook_body(groupKey="loop")))
    assert resp.status == 200
    doc = await resp.json()
    assert doc["status"] == "ignored" and doc["reason"] == "enriched"
    assert [r.levelname for r in caplog.records if "already enriched" in r.message] == ["INFO"]
    assert await _metric(client, 'enricher_intake_ignored_total{reason="enriched"}') == 1.0
    assert await _metric(client, 'enricher_notifications_total{outcome="accepted"}') == 0.0
    # A normal notification after it is the only page.
    assert (await (await post(client, webhook_body())).json())["status"] == "accepted"
    pages = await wait_pages(client, 1)
    await asyncio.sleep(0.2)
    assert len(pages) == 1 and len(rec.pages) == 1
    assert "enriched" not in rec.pages[0].labels


async def test_the_marker_is_the_configured_label(make_client: MakeClient) -> None:
    client = await make_client(
        {"notifiers": {"alertmanager": {"url": "http://am:9093", "label": "forwarded"}}},
        notifiers=[Recorder()],
    )
    ignored = await post(client, _marked(webhook_body(groupKey="a"), "forwarded"))
    assert (await ignored.json())["status"] == "ignored"
    # `enriched` means nothing to this instance: paged as any label.
    other = await post(client, _marked(webhook_body(groupKey="b"), "enriched"))
    assert (await other.json())["status"] == "accepted"


async def test_in_a_mixed_group_only_the_unmarked_alerts_are_paged(
    make_client: MakeClient,
) -> None:
    rec = Recorder()
    client = await make_client(notifiers=[rec])
    body = webhook_body()
    first = body["alerts"][0]
    plain = {**first, "labels": {**first["labels"], "pod": "a"}, "fingerprint": "a" * 16}
    marked = {
        **first,
        "status": "firing",
        "labels": {**first["labels"], "pod": "b", "enriched": "true", "team": "other"},
        "fingerprint": "b" * 16,
    }
    resolved = {
        **first,
        "status": "resolved",
        "endsAt": "2026-11-27T16:30:00Z",
        "labels": {**first["labels"], "pod": "c"},
        "fingerprint": "c" * 16,
    }
    body["alerts"] = [marked, plain]
    body["commonLabels"] = {"alertname": "CheckoutHighErrorRate", "service": "checkout"}
    assert (await (await post(client, body)).json())["status"] == "accepted"
    # Only resolved alerts left besides the marked firing one: a resolved notification.
    body2 = {**body, "groupKey": "second", "alerts": [marked, resolved]}
    assert (await (await post(client, body2)).json())["status"] == "accepted"
    await wait_pages(client, 2)
    one, two = sorted(rec.pages, key=lambda p: p.id)
    assert [a.labels["pod"] for a in one.alerts] == ["a"]
    assert one.labels["team"] == "payments"  # common labels recomputed over what is left
    assert [a.labels["pod"] for a in two.alerts] == ["c"] and two.status == "resolved"
    assert await _metric(client, 'enricher_intake_ignored_total{reason="enriched"}') == 0.0


# --- the documented Alertmanager configuration ----------------------------------------------


def doc_alertmanager_yaml() -> str:
    """The YAML block of the doc that is the Alertmanager configuration."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    [block] = [b for b in blocks if b.startswith("# alertmanager.yml")]
    return block


needs_amtool = pytest.mark.skipif(
    not Path(AMTOOL).exists(), reason="needs Debian's amtool (prometheus-alertmanager)"
)


@needs_amtool
def test_the_documented_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(doc_alertmanager_yaml())
    check = subprocess.run(
        [AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def receiver(*labels: str) -> str:
        out = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()

    assert receiver("alertname=X", "team=payments") == "enricher"
    assert receiver("alertname=X", "team=payments", "enriched=false") == "enricher"
    assert receiver("alertname=X", "team=payments", "enriched=true") == "payments-opsgenie"
    assert receiver("alertname=X", "team=search", "enriched=true") == "search-email"
    assert receiver("alertname=X", "team=nobody", "enriched=true") == "payments-opsgenie"


@needs_amtool
def test_amtool_refuses_a_webhook_timeout_on_0_25(tmp_path: Path) -> None:
    """Why the doc has no `timeout:`: the check above would catch it."""
    bad = doc_alertmanager_yaml().replace(
        "        max_alerts: 0\n", "        max_alerts: 0\n        timeout: 10s\n", 1
    )
    path = tmp_path / "alertmanager.yml"
    path.write_text(bad)
    check = subprocess.run(
        [AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode != 0 and "timeout" in check.stdout + check.stderr


# --- a real Alertmanager 0.25 with the documented route --------------------------------------


class Receivers(DoubleServer):
    """The team's receivers: webhook configs that record each notification by receiver."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[str, dict[str, Any]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{receiver}", self._notify)

    async def _notify(self, request: web.Request) -> web.Response:
        self.got.append((request.match_info["receiver"], await request.json()))
        return web.Response(status=200)


class _Gatherer:
    async def gather(self, inp: GatherInput) -> GatherOutput:
        return GatherOutput(bundle=checkout_bundle())


def _receiver_names(route: dict[str, Any]) -> set[str]:
    names = {route["receiver"]} if "receiver" in route else set()
    for child in route.get("routes", []):
        names |= _receiver_names(child)
    return names


def _stack_config(enricher_url: str, receivers_url: str) -> dict[str, Any]:
    """The documented route, unchanged but for its timers; every receiver a webhook: the
    enricher's to the enricher under test, the team's to the recording double."""
    doc = yaml.safe_load(doc_alertmanager_yaml())
    route = doc["route"]
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    receivers = []
    for name in sorted(_receiver_names(route)):
        url = f"{enricher_url}/api/v1/alerts" if name == "enricher" else f"{receivers_url}/{name}"
        receivers.append({"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]})
    return {"route": route, "receivers": receivers}


async def _wait(check: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _am_alerts(am_url: str, alerts: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{am_url}/api/v2/alerts", json=alerts) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.fixture
async def team() -> AsyncIterator[Receivers]:
    d = Receivers()
    await d.start()
    yield d
    await d.stop()


@pytest.mark.e2e
@REAL_STACK[1]
async def test_real_alertmanager_enriched_alert_reaches_the_team_once_and_never_loops(
    tmp_path: Path, make_client: MakeClient, team: Receivers
) -> None:
    am = Alertmanager(tmp_path / "am", webhook_url="http://127.0.0.1:9/unused")
    client = await make_client(
        {"public_url": PUBLIC, "notifiers": {"alertmanager": {"url": am.url}}},
        gatherer=_Gatherer(),
    )
    enricher_url = str(client.make_url("")).rstrip("/")
    config = _stack_config(enricher_url, team.url)
    (am.workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    await asyncio.to_thread(am.__enter__)
    try:
        labels = {
            "alertname": "ForwardLoopE2E",
            "service": "checkout",
            "severity": "critical",
            "team": "payments",
        }
        starts = datetime.now(UTC) - timedelta(seconds=5)
        original = {
            "labels": labels,
            "annotations": {"summary": "checkout 5xx above 5%"},
            "startsAt": starts.isoformat(),
        }
        await _am_alerts(am.url, [original])

        received = 'enricher_notifications_total{outcome="received"}'
        ignored = 'enricher_intake_ignored_total{reason="enriched"}'
        # The enriched copy reaches the team's receiver (the one the doc routes team=payments to).
        await _wait(lambda: team.got, 15, "the enriched alert at the team's receiver")
        [(receiver, note)] = team.got
        assert receiver == "payments-opsgenie"
        [alert] = note["alerts"]
        assert alert["status"] == "firing"
        assert alert["labels"] == {**labels, "enriched": "true"}
        [page] = await wait_pages(client, 1)
        ann = alert["annotations"]
        assert ann["enricher_hypothesis"].startswith("db-primary `SELECT orders` took 1.21 s")
        assert ann["enricher_page_url"] == f"{PUBLIC}/pages/{page['id']}"
        assert ann["summary"] == "checkout 5xx above 5%"
        assert {d["notifier"]: d["state"] for d in page["deliveries"]}["alertmanager"] == "sent"
        assert await _metric(client, received) == 1.0

        # No loop: after several group intervals nothing more went anywhere. The route kept
        # the copy from the enricher (the intake's guard never had to act).
        await asyncio.sleep(4)
        assert len(team.got) == 1
        assert await _metric(client, received) == 1.0
        assert await _metric(client, ignored) == 0.0
        assert len((await (await client.get("/api/v1/pages")).json())["pages"]) == 1

        # The resolve of the original resolves the copy downstream, once.
        await _am_alerts(am.url, [{**original, "endsAt": datetime.now(UTC).isoformat()}])
        await _wait(lambda: len(team.got) >= 2, 15, "the resolve at the team's receiver")
        await asyncio.sleep(3)
        assert [(r, n["status"]) for r, n in team.got] == [
            ("payments-opsgenie", "firing"),
            ("payments-opsgenie", "resolved"),
        ]
        [resolved] = team.got[1][1]["alerts"]
        assert resolved["labels"] == {**labels, "enriched": "true"}
        assert resolved["status"] == "resolved"
        assert await _metric(client, received) == 2.0
        assert await _metric(client, ignored) == 0.0
        assert "Traceback" not in am.log()
    finally:
        await asyncio.to_thread(am.stop)


@pytest.mark.e2e
@REAL_STACK[1]
async def test_real_alertmanager_accepts_hostile_enriched_alerts_as_built(
    tmp_path: Path,
) -> None:
    """The postable shape against the real API v2: Alertmanager 0.25 refuses a whole batch
    for one bad name or an end before the start, so this is where the shape is proven."""
    am = Alertmanager(tmp_path / "am", webhook_url="http://127.0.0.1:9/unused")
    await asyncio.to_thread(am.__enter__)
    try:
        page = _page(
            alert={
                "labels": {"alertname": "Hostile\x00\u202e", "bad-name": "x", "empty": ""},
                "annotations": {"summary": "a\x07b\ud800c\nline 2", "enricher_x": "forged"},
                "generatorURL": "javascript:alert(1)",
            }
        )
        page.paged_at = datetime.now(UTC)
        fwd = AlertmanagerForwarder(_config(url=am.url), PUBLIC)
        try:
            await fwd.send(page, _ctx())
        finally:
            await fwd.close()
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{am.url}/api/v2/alerts", params={"filter": 'enriched="true"'}) as resp,
        ):
            [got] = await resp.json()
        assert got["labels"] == {"alertname": "Hostile", "enriched": "true"}
        assert got["annotations"]["summary"] == "abc\nline 2"
        assert got["annotations"]["enricher_page_url"] == f"{PUBLIC}/pages/7"
        assert "enricher_x" not in got["annotations"]
        assert got["status"]["state"] == "active"
    finally:
        await asyncio.to_thread(am.stop)
