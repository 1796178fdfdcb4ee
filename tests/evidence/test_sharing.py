"""What an alert storm of one incident shares, and that sharing changes no bundle.

An incident's alerts ask the same questions; the gather shares the answers (HTTP cache and
single-flight), the collection itself while it runs, and everything derived from the
answers: parsing, span analysis, the bundle's items with their token costs and redacted
forms. These tests count that work and compare shared results with lone gathers.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import enricher.evidence.gather as gather_mod
import enricher.sources.tempo as tempo_mod
from enricher.bundle.budget import BudgetEntry, shell_tokens
from enricher.bundle.build import BundleMemo, _redacted_bundle, redact_bundle
from enricher.bundle.model import (
    AlertInfo,
    BudgetInfo,
    EvidenceBundle,
    EvidenceItem,
    GatherStats,
    Link,
    Missing,
)
from enricher.bundle.redact import is_secret_key
from enricher.intake.webhook import WebhookMessage
from enricher.sources.http import _Slots
from enricher.sources.loki import LogLine
from tests.doubles.scenario import Incident
from tests.evidence.conftest import Doubles, GathererFactory


def _messages(inc: Incident, n: int) -> list[WebhookMessage]:
    base = inc.alert_message(n_alerts=n, pod_labels=True)
    return [
        WebhookMessage.model_validate({**base, "alerts": [a], "groupKey": f"g-{i}"})
        for i, a in enumerate(base["alerts"])
    ]


def _received(inc: Incident) -> datetime:
    return datetime.fromtimestamp(inc.end, UTC)


def _comparable(b: EvidenceBundle) -> dict[str, Any]:
    """The bundle without its timing."""
    d = json.loads(b.model_dump_json())
    d["stats"].pop("elapsed_ms")
    return d


class _Counter:
    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


async def test_storm_parses_and_analyses_each_trace_once_and_builds_the_items_once(
    make_gatherer: GathererFactory,
    doubles: Doubles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inc = doubles.load(Incident())
    analyse = _Counter(gather_mod.analyse_traces)
    parse = _Counter(tempo_mod.parse_trace)
    monkeypatch.setattr(gather_mod, "analyse_traces", analyse)
    monkeypatch.setattr(tempo_mod, "parse_trace", parse)
    g = await make_gatherer()
    msgs = _messages(inc, 60)
    first = await asyncio.gather(*(g.gather(m, _received(inc), 5) for m in msgs[:50]))
    # the 50 concurrent gathers ran one collection
    assert (g.shared_collections, g.shared_joins) == (1, 49)
    # a second wave after the first finished: served by the cache and the memos
    second = [await g.gather(m, _received(inc), 5) for m in msgs[50:]]
    bundles = first + second
    assert all(b.culprit is not None and b.culprit.service == "ledger" for b in bundles)
    # 3 suspect and 3 healthy traces, each fetched once and parsed once
    assert doubles.tempo.count("/api/v2/traces/") == 6
    assert parse.calls == 6, parse.calls
    assert analyse.calls == 1, analyse.calls
    assert g._bundle_memo is not None and g._bundle_memo.core_builds == 1
    # 17 for the alert's own chain, and one for the build info of the failing path's services
    assert sum(g.requests_sent().values()) == 18
    # every alert keeps its own identity on the page
    assert len({b.alert.labels["pod"] for b in bundles}) == 60
    assert len({b.alert.group_key for b in bundles}) == 60


async def test_storm_bundles_equal_lone_gathers_of_the_same_alerts(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident(secret_line="db password=hunter2 for ledger"))
    msgs = _messages(inc, 12)
    # received within one 10 s quantum: one window, one collection
    times = [_received(inc) + timedelta(seconds=1, milliseconds=300 * i) for i in range(len(msgs))]
    # A fresh gatherer per lone alert: the same request counts (they are part of the bundle
    # and its token estimate) as the storm's, which sends one set of requests. A small
    # budget, so that shrinking and dropping take part.
    lone = []
    for m, t in zip(msgs, times, strict=True):
        lone_g = await make_gatherer(cache_ttl=0, token_budget=3000)
        lone.append(await lone_g.gather(m, t, 5))
        assert lone_g._bundle_memo is None and lone_g.shared_joins == 0
    g = await make_gatherer(token_budget=3000)
    storm = await asyncio.gather(*(g.gather(m, t, 5) for m, t in zip(msgs, times, strict=True)))
    assert g.shared_joins >= 8
    assert storm[0].budget.items_dropped > 0 or storm[0].budget.shrunk_ids
    for a, b in zip(lone, storm, strict=True):
        assert _comparable(a) == _comparable(b)
    assert "hunter2" not in "".join(b.model_dump_json() for b in storm)


async def test_a_gather_joining_a_shared_collection_keeps_its_own_budget(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    doubles.tempo.inject("/api/v2/traces/", status=None, delay=1.0)
    g = await make_gatherer()
    long_msg, short_msg = _messages(inc, 2)
    t0 = time.monotonic()
    leader = asyncio.ensure_future(g.gather(long_msg, _received(inc), 4.0))
    await asyncio.sleep(0.05)  # the collection is running, waiting for Tempo
    short = await g.gather(short_msg, _received(inc), 0.5)
    short_elapsed = time.monotonic() - t0
    long = await leader
    assert g.shared_joins == 1
    assert short_elapsed < 0.65, short_elapsed
    assert short.stats.timed_out
    cut = [m for m in short.missing if m.source == "tempo"]
    assert cut and all("no answer within the gather budget of 0.50s" in m.reason for m in cut)
    assert short.culprit is None
    # the shared collection went on for the gather that still had time
    assert not long.stats.timed_out
    assert long.culprit is not None and long.culprit.service == "ledger"


async def test_a_collection_nobody_waits_for_any_more_is_cancelled(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    doubles.tempo.inject("/api/v2/traces/", status=None, delay=2.0)
    g = await make_gatherer()
    bundles = await asyncio.gather(*(g.gather(m, _received(inc), 0.4) for m in _messages(inc, 5)))
    assert all(b.stats.timed_out for b in bundles)
    assert g._shared == {}
    # a later alert starts a fresh collection rather than joining the abandoned one
    doubles.tempo.clear_faults()
    b = await g.gather(_messages(inc, 1)[0], _received(inc), 5)
    assert b.culprit is not None and (g.shared_collections, g.shared_joins) == (2, 4)


def test_bundle_parts_are_redacted_exactly_as_the_whole_bundle() -> None:
    # Part-by-part redaction is only equivalent if no top-level field name looks secret.
    assert not any(is_secret_key(name) for name in EvidenceBundle.model_fields)
    secret = "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123"
    alert = AlertInfo(
        alertname="A",
        status="firing",
        starts_at=datetime(2030, 1, 1, tzinfo=UTC),
        labels={"api_key": "sk-abcdefghijklmnopqrstuvwxyz", "note": secret},
        summary=f"see {secret}",
    )
    shell = EvidenceBundle.model_construct(
        schema_version="2",
        alert=alert,
        query=None,
        culprit=None,
        deploy=[],
        items=[],
        links=[Link(kind="runbook", title="rb", url="https://u:pw@example.com/x")],
        missing=[Missing(what="w", source="loki", reason=f"failed: {secret}")],
        findings=[f"note {secret}"],
        budget=BudgetInfo(token_budget=100, dropped_ids=["log:1"]),
        stats=GatherStats(backend_requests={"tempo": 1}),
    )
    item = EvidenceItem(
        id="log:1",
        kind="log",
        source="loki",
        priority=1,
        summary=secret,
        log=LogLine(ts_ns=1, line=f"password=hunter2 {secret}", labels={"token": "abc"}),
    )
    whole = redact_bundle(shell.model_copy(update={"items": [item]}))
    red_item = EvidenceItem.model_validate(whole.items[0].model_dump(mode="json"))
    for memo in (None, BundleMemo()):
        parts = _redacted_bundle(shell, [red_item], memo)
        assert parts.model_dump_json() == whole.model_dump_json()
    assert "hunter2" not in whole.model_dump_json() and "pw@" not in whole.model_dump_json()


def test_the_shrunk_cost_floor_never_exceeds_the_shrunk_cost() -> None:
    long = "x" * 5000
    items = [
        EvidenceItem(id="log:1", kind="log", source="loki", priority=1, summary="s"),
        EvidenceItem(
            id=f"span:svc:{long}",
            kind="span",
            source="tempo",
            query=long,
            priority=12,
            summary='quote " and \\ and é ' * 40,
            log=LogLine(ts_ns=1, line=long, labels={"k": long}),
        ),
        EvidenceItem(id="x", kind="contrast", source="analysis", priority=0, summary=long),
    ]
    for item in items:
        e = BudgetEntry(item)
        assert 0 < e.small_floor <= e.small_cost, (item.id[:20], e.small_floor, e.small_cost)


async def test_memoised_shell_estimate_equals_serialising_the_shell(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident(secret_line="token=abcdef123456"))
    g = await make_gatherer()
    memo = BundleMemo()
    for m in _messages(inc, 3):
        b = await g.gather(m, _received(inc), 5)
        b.missing.append(Missing(what="x", source="tempo", reason='a "quoted" reason é'))
        for shell in (
            b.model_copy(update={"items": []}),
            b.model_copy(update={"items": [], "query": None, "links": [], "missing": []}),
        ):
            assert memo.shell_tokens(shell) == shell_tokens(shell)


async def test_backend_slots_serve_the_earliest_deadline_first_and_survive_cancellation() -> None:
    slots = _Slots(1)
    await slots.acquire(10.0)  # held
    order: list[str] = []

    async def wait(name: str, deadline: float) -> None:
        await slots.acquire(deadline)
        order.append(name)
        await asyncio.sleep(0)
        slots.release()

    late = asyncio.ensure_future(wait("late", 9.0))
    gives_up = asyncio.ensure_future(wait("gives up", 0.5))
    early = asyncio.ensure_future(wait("early", 1.0))
    same = asyncio.ensure_future(wait("same deadline, queued later", 1.0))
    await asyncio.sleep(0)
    gives_up.cancel()  # a request timing out in the queue must not take a slot
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(late, early, same)
    assert order == ["early", "same deadline, queued later", "late"]
    assert gives_up.cancelled()
    assert slots.free == 1 and not slots._waiters
    # granted and cancelled before it could run: the slot is passed on, not lost
    await slots.acquire(1.0)
    granted = asyncio.ensure_future(slots.acquire(2.0))
    other = asyncio.ensure_future(wait("other", 3.0))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `granted`...
    granted.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(other)
    assert granted.cancelled() and order[-1] == "other"
    assert slots.free == 1
