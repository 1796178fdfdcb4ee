"""Tempo's ingest lag: a trace is queryable only some seconds after its request.

Real Tempo answers a trace it has not made queryable yet exactly like one it never had (200
with an empty trace on v2), so the newest exemplars often name traces that cannot be fetched
yet. These tests hold the gather to what avoids degraded pages for that reason: older
exemplars preferred, a young empty trace asked once more, spares fetched in place of missing
traces, an honest reason when all of that fails, and no extra request when nothing is missing.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from enricher.bundle.model import EvidenceBundle
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import TempoSourceConfig
from enricher.sources.http import HttpBackend
from enricher.sources.prometheus import WireExemplar, WireExemplarSeries, rank_exemplars
from enricher.sources.promql import analyse_expression
from enricher.sources.tempo import TempoClient
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.scenario import Incident
from tests.doubles.tempo import TempoDouble, otlp_from_tempo
from tests.evidence.conftest import Doubles, GathererFactory, fixture_json
from tests.evidence.test_contract import fetch, meta

LAG = 30.0
FOREVER = 10**12  # a "not visible until" no gather outlives


def received(inc: Incident) -> datetime:
    return datetime.fromtimestamp(inc.end, UTC)


async def run(g: Any, inc: Incident, budget: float = 5.0) -> EvidenceBundle:
    message = WebhookMessage.model_validate(inc.alert_message())
    return await g.gather(message, received(inc), budget)


def reasons(b: EvidenceBundle) -> str:
    return "\n".join(b.missing_reasons())


def chosen(b: EvidenceBundle, role: str) -> list[str]:
    return [i.exemplar.trace_id for i in b.items if i.exemplar and i.exemplar.role == role]


def logs_asked_for(b: EvidenceBundle, tid: str) -> bool:
    """Whether the bundle shows lines of the per-trace log query of `tid` (service error
    lines name every failing trace, so their ids alone prove nothing)."""
    return any(i.kind in ("log", "log_template") and tid in i.query for i in b.items)


def trace_requests(tempo: TempoDouble, tid: str | None = None) -> int:
    return tempo.count(f"/api/v2/traces/{tid or ''}")


def failing_newest_first(inc: Incident) -> list[str]:
    return list(reversed(inc.failing_ids))


def make_fresh(
    prom: PrometheusDouble, tempo: TempoDouble, now: float, ages: dict[str, float]
) -> None:
    """Exemplars of these traces `age` seconds before `now`, their traces ingested at that
    time: invisible in Tempo until `LAG` seconds later (the double's clock runs from `now`)."""
    for exs in prom.exemplars.values():
        for e in exs:
            tid = e["labels"].get("trace_id")
            if tid in ages:
                e["timestamp"] = round(now - ages[tid], 3)
    for tid, age in ages.items():
        tempo.hide_until(tid, now - age + LAG)


# --- ranking ----------------------------------------------------------------------------------


def _series(labels: dict[str, str], *ex: tuple[str, float]) -> WireExemplarSeries:
    return WireExemplarSeries(
        seriesLabels=labels,
        exemplars=[WireExemplar(labels={"trace_id": t}, value="1", timestamp=ts) for t, ts in ex],
    )


ERROR_EXPR = (
    'sum(rate(http_requests_total{service="a",status=~"5.."}[1m])) / '
    'sum(rate(http_requests_total{service="a"}[1m])) > 0.05'
)


def test_fresh_exemplars_are_passed_over_for_older_ones_and_the_next_kept_as_spares() -> None:
    aq = analyse_expression(ERROR_EXPR, {"alertname": "E", "service": "a"})
    now = 1000.0
    errors = _series(
        {"service": "a", "status": "500"},
        *((f"{i:x}" * 32, now - age) for i, age in enumerate((2, 5, 40, 50, 60, 70, 80, 90), 1)),
    )
    sel = rank_exemplars([errors], aq, 3, 0, ["trace_id"], now=now, ingest_lag=LAG)
    assert [c.trace_id[0] for c in sel.suspects] == ["3", "4", "5"]  # 40-60 s old
    assert [c.trace_id[0] for c in sel.spare_suspects] == ["6", "7", "8"]
    assert sel.fresh_after == now - LAG
    # without a reference time the ranking is the plain most-recent-first one
    plain = rank_exemplars([errors], aq, 3, 0, ["trace_id"])
    assert [c.trace_id[0] for c in plain.suspects] == ["1", "2", "3"]


def test_fresh_exemplars_fill_in_oldest_first_when_too_few_are_older() -> None:
    aq = analyse_expression(ERROR_EXPR, {"alertname": "E", "service": "a"})
    now = 1000.0
    errors = _series(
        {"service": "a", "status": "500"},
        *((f"{i:x}" * 32, now - age) for i, age in enumerate((1, 4, 9, 45), 1)),
    )
    sel = rank_exemplars([errors], aq, 3, 0, ["trace_id"], now=now, ingest_lag=LAG)
    assert [c.trace_id[0] for c in sel.suspects] == ["4", "3", "2"]
    assert [c.trace_id[0] for c in sel.spare_suspects] == ["1"]
    assert "only 9 s old, Tempo may not have it yet" in sel.suspects[1].reason
    assert "s old" not in sel.suspects[0].reason


# --- the Tempo double is held to the recorded not-found answer -----------------------------


async def test_tempo_double_answers_a_not_yet_visible_trace_like_an_unknown_one(
    tempo: TempoDouble,
) -> None:
    doc = fixture_json("tempo-trace-v2.json")
    tempo.ingest(otlp_from_tempo(doc))
    tid = "b22fc2a2caac4451e1a7afb90ea05a3b"
    ends = [
        int(sp["endTimeUnixNano"])
        for rs in doc["trace"]["resourceSpans"]
        for ss in rs["scopeSpans"]
        for sp in ss["spans"]
    ]
    last_end = max(ends) / 1e9
    tempo.ingest_lag = LAG
    m = meta("tempo-trace-notfound")
    headers = m["request"]["headers"]
    unknown_v2 = await fetch(tempo.url + m["request"]["path"], headers=headers)
    unknown_v1 = await fetch(tempo.url + m["request"]["path"].replace("/v2", ""), headers=headers)
    search = {"q": '{ resource.service.name = "checkout" }', "start": 0, "end": 2**40}

    tempo.clock = lambda: last_end + LAG - 1  # ingested 29 s ago: not queryable yet
    v2 = await fetch(f"{tempo.url}/api/v2/traces/{tid}", headers=headers)
    assert v2 == unknown_v2
    assert (v2[0], v2[1]) == (m["status"], m["content_type"])
    assert json.loads(v2[2]) == fixture_json("tempo-trace-notfound.json")
    assert await fetch(f"{tempo.url}/api/traces/{tid}", headers=headers) == unknown_v1
    assert json.loads((await fetch(f"{tempo.url}/api/search", search))[2])["traces"] == []

    tempo.clock = lambda: last_end + LAG
    status, _, body = await fetch(f"{tempo.url}/api/v2/traces/{tid}", headers=headers)
    assert status == 200 and json.loads(body) == doc
    assert len(json.loads((await fetch(f"{tempo.url}/api/search", search))[2])["traces"]) == 1

    tempo.hide_until(tid, last_end + 3 * LAG)  # an explicit time overrides the span-derived one
    assert await fetch(f"{tempo.url}/api/v2/traces/{tid}", headers=headers) == unknown_v2


async def test_a_trace_found_on_refetch_supersedes_the_cached_empty_answer(
    tempo: TempoDouble,
) -> None:
    tempo.ingest(otlp_from_tempo(fixture_json("tempo-trace-v2.json")))
    tid = "b22fc2a2caac4451e1a7afb90ea05a3b"
    tempo.hide_until(tid, FOREVER)
    cfg = TempoSourceConfig(url=tempo.url)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        client = TempoClient(HttpBackend("tempo", cfg, session, 30.0), cfg)
        assert (await client.fetch_trace(tid)).outcome == "not_found"
        tempo.visible_from.clear()
        assert (await client.fetch_trace(tid)).outcome == "not_found"  # cached answer
        assert trace_requests(tempo) == 1
        assert (await client.fetch_trace(tid, refetch=True)).outcome == "found"
        assert (await client.fetch_trace(tid)).outcome == "found"
        assert trace_requests(tempo) == 2


# --- the gather ---------------------------------------------------------------------------


async def test_natural_ingest_lag_costs_no_degraded_page_and_no_extra_request(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    # The newest (healthy) exemplar is ~24 s old: its trace is not queryable yet.
    doubles.tempo.ingest_lag = LAG
    doubles.tempo.run_clock(inc.end)
    newest = inc.healthy_ids[-1]
    assert not doubles.tempo.visible(newest)
    b = await run(await make_gatherer(token_budget=50000), inc)
    assert b.missing == [], reasons(b)
    assert newest not in chosen(b, "healthy") and len(chosen(b, "healthy")) == 3
    assert b.culprit is not None and b.culprit.service == "ledger"
    assert trace_requests(doubles.tempo) == 6  # 3 suspects + 3 healthy, nothing else
    assert b.stats.backend_requests["tempo"] == 6


async def test_fresh_suspect_exemplars_are_passed_over_for_older_ones(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    fresh = failing_newest_first(inc)[:2]
    make_fresh(doubles.prom, doubles.tempo, inc.end, {fresh[0]: 3, fresh[1]: 6})
    doubles.tempo.run_clock(inc.end)
    b = await run(await make_gatherer(token_budget=50000), inc)
    assert b.missing == [], reasons(b)
    assert chosen(b, "suspect") == failing_newest_first(inc)[2:5]
    assert trace_requests(doubles.tempo) == 6
    for tid in fresh:
        assert trace_requests(doubles.tempo, tid) == 0


async def test_an_empty_young_trace_is_asked_again_once_and_then_found(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    ids = failing_newest_first(inc)
    make_fresh(doubles.prom, doubles.tempo, inc.end, {t: 2 + i for i, t in enumerate(ids)})
    first = ids[-1]  # the oldest of the young ones is chosen first
    doubles.tempo.hide_until(first, inc.end + 0.1)  # queryable a moment into the gather
    doubles.tempo.run_clock(inc.end)
    g = await make_gatherer(top_traces=1, token_budget=50000, tempo={"empty_retry_delay": 0.3})
    b = await run(g, inc)
    assert b.missing == [], reasons(b)
    assert chosen(b, "suspect") == [first]
    assert trace_requests(doubles.tempo, first) == 2
    assert trace_requests(doubles.tempo) == 2 + 3  # no spare fetched


async def test_an_empty_young_trace_is_retried_once_then_replaced_by_a_spare(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    ids = failing_newest_first(inc)
    make_fresh(doubles.prom, doubles.tempo, inc.end, {t: 2 + i for i, t in enumerate(ids)})
    first, spare = ids[-1], ids[-2]
    doubles.tempo.hide_until(first, FOREVER)  # e.g. dropped by a sampler: never arrives
    doubles.tempo.hide_until(spare, inc.end - 1)  # already queryable
    doubles.tempo.run_clock(inc.end)
    for tid in (first, spare):  # a log line of each request, near its (moved) exemplar
        meta_ = {"trace_id": tid, "span_id": "ab" * 8}
        line = f"ledger insert waited 900 ms for a lock trace_id={tid}"
        ts = str(int((inc.end - 5) * 1e9))
        doubles.loki.push(
            {"streams": [{"stream": {"service_name": "ledger"}, "values": [[ts, line, meta_]]}]}
        )
    g = await make_gatherer(top_traces=1, token_budget=50000, tempo={"empty_retry_delay": 0.2})
    b = await run(g, inc)
    assert b.missing == [], reasons(b)
    assert chosen(b, "suspect") == [spare]
    item = next(i for i in b.items if i.exemplar and i.exemplar.trace_id == spare)
    assert f"in place of {first}, which Tempo did not have yet" in item.summary
    assert trace_requests(doubles.tempo, first) == 2  # asked, then once more
    assert trace_requests(doubles.tempo, spare) == 1
    assert b.culprit is not None and b.culprit.service == "ledger"
    # the replaced trace's log lines went with it; the spare's came instead
    assert not logs_asked_for(b, first) and logs_asked_for(b, spare)


async def test_a_missing_healthy_trace_is_replaced_by_a_spare_without_retry(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    g = await make_gatherer(token_budget=50000)
    first = await run(g, inc)
    gone = chosen(first, "healthy")[0]
    doubles.tempo.hide_until(gone, FOREVER)  # an old exemplar whose trace Tempo lost
    before = trace_requests(doubles.tempo)
    b = await run(await make_gatherer(token_budget=50000), inc)
    assert b.missing == [], reasons(b)
    assert gone not in chosen(b, "healthy") and len(chosen(b, "healthy")) == 3
    assert trace_requests(doubles.tempo) - before == 7  # one spare
    assert trace_requests(doubles.tempo, gone) == 2  # once per gather, no retry


async def test_every_candidate_young_and_invisible_says_not_ingested_yet_within_budget(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    ids = failing_newest_first(inc)
    make_fresh(doubles.prom, doubles.tempo, inc.end, {t: 2 + i for i, t in enumerate(ids)})
    for t in ids:
        doubles.tempo.hide_until(t, FOREVER)
    doubles.tempo.run_clock(inc.end)
    budget = 1.5
    g = await make_gatherer(tempo={"empty_retry_delay": 0.2})
    t0 = time.monotonic()
    b = await run(g, inc, budget=budget)
    elapsed = time.monotonic() - t0
    assert elapsed < budget, elapsed
    assert not b.stats.timed_out
    text = reasons(b)
    assert "tempo: trace" in text
    assert "trace not ingested by Tempo yet (exemplar" in text
    assert "s old; Tempo lags up to 30 s)" in text
    assert "trace not found" not in text
    assert all("not ingested by Tempo yet" in m.reason for m in b.missing if m.source == "tempo")
    # bounded: 3 chosen + 3 spares, each asked at most twice; the 3 healthy once
    assert trace_requests(doubles.tempo) <= 6 * 2 + 3
    # the two youngest, ranked behind the spares, are never asked for
    assert sum(trace_requests(doubles.tempo, t) for t in ids[:2]) == 0


async def test_an_old_trace_missing_everywhere_keeps_the_plain_not_found_reason(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = Incident().build()
    inc.load(doubles.prom, None, doubles.loki, doubles.grafana)  # Tempo has nothing
    b = await run(await make_gatherer(), inc)
    assert "trace not found (Tempo answered with an empty trace)" in reasons(b)
    assert "not ingested" not in reasons(b)
    # each chosen trace and each spare asked once, no retries for old exemplars
    assert trace_requests(doubles.tempo) == 12


async def test_a_storm_retries_and_replaces_a_missing_trace_once_for_all_its_alerts(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = doubles.load(Incident())
    ids = failing_newest_first(inc)
    make_fresh(doubles.prom, doubles.tempo, inc.end, {t: 2 + i for i, t in enumerate(ids)})
    first, spare = ids[-1], ids[-2]
    doubles.tempo.hide_until(first, FOREVER)
    doubles.tempo.hide_until(spare, inc.end - 1)
    doubles.tempo.run_clock(inc.end)
    g = await make_gatherer(top_traces=1, tempo={"empty_retry_delay": 0.2})
    base = inc.alert_message(n_alerts=30, pod_labels=True)
    messages = [
        WebhookMessage.model_validate(
            {**base, "alerts": [a], "groupKey": f"{base['groupKey']}-{i}"}
        )
        for i, a in enumerate(base["alerts"])
    ]
    bundles = await asyncio.gather(*(g.gather(m, received(inc), 5) for m in messages))
    assert all(b.missing == [] for b in bundles), reasons(bundles[0])
    assert all(chosen(b, "suspect") == [spare] for b in bundles)
    assert trace_requests(doubles.tempo, first) == 2
    assert trace_requests(doubles.tempo) == 2 + 1 + 3
