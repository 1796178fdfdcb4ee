"""The gather stage end to end against the doubles: findings, faults, budget, storm."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

from prometheus_client import REGISTRY

from enricher.bundle.model import EvidenceBundle
from enricher.evidence import Gatherer
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import SourcesConfig
from enricher.sources.deploys import DeployEvent
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.scenario import Dep, Incident
from tests.evidence.conftest import Doubles, GathererFactory


def received(inc: Incident) -> datetime:
    return datetime.fromtimestamp(inc.end, UTC)


def reasons(bundle: EvidenceBundle) -> str:
    return "\n".join(bundle.missing_reasons())


async def run(g: Gatherer, inc: Incident, budget: float = 5.0, **msg: Any) -> EvidenceBundle:
    message = WebhookMessage.model_validate(inc.alert_message(**msg))
    return await g.gather(message, received(inc), budget)


# --- findings -------------------------------------------------------------------------------


async def test_error_incident_names_the_failing_dependency_with_its_logs_and_deploy(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    b = await run(await make_gatherer(), inc)
    assert b.missing == [], reasons(b)
    assert b.culprit is not None
    assert (b.culprit.service, b.culprit.operation) == ("ledger", "INSERT entries")
    assert b.culprit.key_attributes["feature_flag.batch_ledger"] is True
    assert b.culprit.exception.startswith("DeadlockDetected")
    assert "0/3 healthy" in b.culprit.contrast
    assert set(b.culprit.suspect_traces * [0]) == {0} and b.culprit.agreeing_traces == 3
    item = b.item(b.culprit.item_id)
    assert item is not None and item.priority == 0 and item.query.startswith("GET /api/v2/traces/")
    culprit_logs = [b.item(i) for i in b.culprit.log_item_ids]
    assert any(x and x.log and inc.culprit_log in x.log.line for x in culprit_logs)
    assert all(x and x.log and x.log.span_id == item.span.span_id for x in culprit_logs)  # type: ignore[union-attr]
    # One deploy entry per relevant service, the culprit's own first.
    assert [d.service for d in b.deploy][:1] == ["ledger"] and b.deploy[0].role == "culprit"
    d = b.deploy_of("payments")
    assert d is not None and d.role == "failing_path" and d.calls_culprit
    assert (d.current_version, d.current_commit) == ("5.2.0", "d4e5f6a")
    assert d.previous_version == "5.1.9"
    assert d.minutes_before_alert is not None and 5 <= d.minutes_before_alert <= 7
    kinds = {link.kind for link in b.links}
    assert {"grafana_trace", "tempo_trace", "grafana_logs", "runbook", "dashboard"} <= kinds
    assert b.budget.tokens_estimated <= 6000
    assert b.schema_version == "2"


async def test_error_present_in_healthy_traces_too_is_background_not_culprit(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    b = await run(await make_gatherer(token_budget=20000), inc)
    promo = b.item("contrast:promo:GET /promo/banner")
    assert promo is not None and promo.contrast is not None and promo.contrast.background
    assert "3/3 healthy" in promo.summary
    assert b.culprit is not None and b.culprit.service != "promo"


async def test_latency_incident_blames_the_span_whose_self_time_grew(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = Incident(
        service="search",
        op="GET /api/search",
        mode="latency",
        deps=[
            Dep("es", "query products", 30),
            Dep("cache", "GET results", 3),
            Dep("recs", "GET /recs", 8),
        ],
        culprit="es:query products",
        culprit_ms=1400,
        background="recs:GET /recs",
        culprit_attrs={"db.query.text": "match_all products", "feature_flag.fuzzy": "on"},
        culprit_log="es query took too long: 1400ms, shards 12/12",
    )
    doubles.load(inc)
    b = await run(await make_gatherer(), inc)
    assert b.query is not None and b.query.kind == "latency"
    assert b.culprit is not None
    assert (b.culprit.service, b.culprit.operation) == ("es", "query products")
    assert "self time" in b.culprit.contrast and b.culprit.self_ms > 1000
    assert all(
        i.exemplar.value >= 0.5 for i in b.items if i.exemplar and i.exemplar.role == "suspect"
    )


async def test_deploy_events_posted_by_ci_give_the_deploy_time(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = Incident()
    inc.build().load(doubles.prom, doubles.tempo, doubles.loki, None)  # type: ignore[arg-type]
    alert_start = datetime.fromtimestamp(inc.end - 60, UTC)

    class Store:
        asked: list[tuple[str, datetime, datetime]] = []

        async def recent(self, service: str, since: datetime, until: datetime) -> list[DeployEvent]:
            self.asked.append((service, since, until))
            return [
                DeployEvent(
                    service=service,
                    version="5.2.0",
                    commit="d4e5f6a",
                    environment="prod",
                    time=alert_start - timedelta(minutes=3),
                )
            ]

    store = Store()
    b = await run(await make_gatherer(deploys=store), inc)
    assert store.asked and store.asked[0][0] == "payments"
    d = b.deploy_of("payments")
    assert d is not None and d.deploy_time_source == "ci_event"
    assert d.minutes_before_alert == 3.0
    assert "deployed 3 minutes before the alert started" in d.summary


# --- faults -----------------------------------------------------------------------------------


async def test_alert_without_generator_url_uses_the_matching_prometheus_rule(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    doubles.prom.add_rule("OtherAlert", "up == 0", {"severity": "page"})
    doubles.prom.add_rule(
        inc.alertname,
        inc.expr,
        {"severity": "critical"},
        alerts=[{"alertname": inc.alertname, "service": "payments", "severity": "critical"}],
    )
    b = await run(await make_gatherer(), inc, generator_url=False)
    assert b.query is not None and b.query.source == "rules"
    assert b.culprit is not None and b.culprit.service == "ledger"


async def test_alert_without_generator_url_and_no_rule_falls_back_to_trace_search(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    b = await run(await make_gatherer(), inc, generator_url=False)
    assert "no Prometheus alerting rule matches" in reasons(b)
    assert b.query is None
    assert b.culprit is not None and b.culprit.service == "ledger"
    assert any(i.exemplar and i.exemplar.source == "traceql" for i in b.items)
    assert doubles.tempo.count("/api/search") >= 1


async def test_expression_the_parser_rejects_is_listed_as_missing(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    msg = inc.alert_message()
    msg["alerts"][0]["generatorURL"] = "http://prometheus:9090/graph?g0.expr=" + quote_plus(
        "sum(rate(http_requests_total[5m]"
    )
    g = await make_gatherer()
    b = await g.gather(WebhookMessage.model_validate(msg), received(inc), 5)
    assert "PromQL rejected by the parser" in reasons(b)
    assert doubles.prom.count("/api/v1/query_exemplars") == 0


async def test_exemplars_without_trace_id_or_with_malformed_ids_are_skipped_with_reason(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = Incident().build()
    inc.load(None, doubles.tempo, doubles.loki, doubles.grafana)
    series = {"__name__": "http_requests_total", "service": "payments", "status": "500"}
    doubles.prom.add_exemplar(series, {"user": "42"}, 1, inc.end - 5)
    doubles.prom.add_exemplar(series, {"trace_id": "zz-not-hex"}, 1, inc.end - 4)
    doubles.prom.add_exemplar(series, {"trace_id": "0" * 32}, 1, inc.end - 3)
    b = await run(await make_gatherer(), inc)
    text = reasons(b)
    assert "skipped: exemplar has no trace id label" in text
    assert "skipped: malformed trace id (e.g. zz-not-hex)" in text
    assert "2 exemplar(s) skipped: malformed trace id" in text
    # without usable exemplars the service's failing traces are searched instead
    assert b.culprit is not None and b.culprit.service == "ledger"


async def test_trace_not_found_in_tempo_is_listed_as_missing(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = Incident().build()
    inc.load(doubles.prom, None, doubles.loki, doubles.grafana)
    b = await run(await make_gatherer(), inc)
    assert "trace not found (Tempo answered with an empty trace)" in reasons(b)
    assert b.culprit is None
    assert "none of the chosen traces could be fetched from Tempo" in b.findings


async def test_tempo_500_is_retried_and_a_persistent_500_is_listed(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    doubles.tempo.inject("/api/v2/traces/", status=500, times=1)
    b = await run(await make_gatherer(), inc)
    assert b.culprit is not None and b.missing == [], reasons(b)
    doubles.tempo.clear_faults()
    doubles.tempo.inject("/api/v2/traces/", status=500)
    before = doubles.tempo.count("/api/v2/traces/")
    b = await run(await make_gatherer(tempo={"retries": 2}), inc)
    assert "HTTP 500" in reasons(b) and b.culprit is None
    assert doubles.tempo.count("/api/v2/traces/") - before == 6 * 3  # 6 traces, 1 try + 2 retries


async def test_tempo_timeout_is_listed_and_the_rest_still_arrives(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    doubles.tempo.inject("/api/v2/traces/", status=None, delay=3.0)
    g = await make_gatherer(tempo={"timeout": 0.2, "retries": 1})
    t0 = time.monotonic()
    b = await run(g, inc, budget=2.0)
    assert time.monotonic() - t0 < 2.0
    assert "tempo: trace" in reasons(b) and "timed out" in reasons(b)
    assert any(i.kind == "log" for i in b.items)  # Loki answered meanwhile
    d = b.deploy_of("payments")
    assert d is not None and d.current_version == "5.2.0"


async def test_loki_400_is_recorded_as_a_rejected_query(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    g = await make_gatherer(loki={"selector": '{service_name=~".*"}'})
    b = await run(g, inc)
    text = reasons(b)
    assert "loki: logs of trace" in text and "rejected the query" in text
    assert "empty-compatible" in text
    assert b.culprit is not None  # traces still analysed


async def test_5000_log_lines_are_capped_and_collapsed_into_templates(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident(extra_log_lines=5000))
    g = await make_gatherer(loki={"error_limit": 5000, "max_lines": 100}, token_budget=50000)
    b = await run(g, inc)
    assert b.stats.log_lines_in >= 5000
    templates = [i.template for i in b.items if i.template is not None]
    widget = [t for t in templates if "failed to refresh widget" in t.template]
    # ~5,000 lines, one template (Loki's limit of 5,000 also holds a few other error lines)
    assert len(widget) == 1 and widget[0].count > 4900
    assert any("hit its limit of 5000 lines" in f for f in b.findings)
    assert len(b.items) < 80
    # under the default budget that noise goes first and the culprit stays
    b = await run(await make_gatherer(loki={"error_limit": 5000}), inc)
    assert b.budget.tokens_estimated <= 6000
    assert not any(i.template and "refresh widget" in i.template.template for i in b.items)
    assert b.culprit is not None and b.item(b.culprit.item_id) is not None


async def test_secrets_in_logs_never_reach_the_bundle(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    secret = (
        "retrying with DSN postgres://ledger:Sup3rS3cret@db:5432/ledger password=hunter2 "
        "Authorization: Bearer tok_abcdefghijklmnop AKIAIOSFODNN7EXAMPLE"
    )
    inc = doubles.load(Incident(secret_line=secret))
    b = await run(await make_gatherer(token_budget=30000), inc)
    dump = b.model_dump_json()
    assert "retrying with DSN postgres://ledger:[REDACTED]@db:5432" in dump
    for s in ("Sup3rS3cret", "hunter2", "tok_abcdefghijklmnop", "AKIAIOSFODNN7EXAMPLE"):
        assert s not in dump


async def test_gather_returns_within_budget_when_every_backend_hangs(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    for d in doubles.all:
        d.inject("/", status=None, delay=10.0)
    g = await make_gatherer(
        prometheus={"timeout": 30},
        tempo={"timeout": 30},
        loki={"timeout": 30},
        grafana={"timeout": 30},
    )
    t0 = time.monotonic()
    b = await run(g, inc, budget=0.6)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.6, elapsed
    assert b.stats.timed_out
    assert "no answer within the gather budget of 0.60s" in reasons(b)
    assert {m.source for m in b.missing} >= {"prometheus", "loki", "grafana"}


async def test_nothing_configured_gives_a_bundle_listing_each_backend() -> None:
    inc = Incident().build()
    g = Gatherer(SourcesConfig())
    try:
        b = await run(g, inc, budget=1.0)
    finally:
        await g.close()
    by_source = {m.source: m.reason for m in b.missing}
    assert by_source["prometheus"] == by_source["tempo"] == by_source["loki"] == "not configured"
    assert b.alert.alertname == inc.alertname and b.culprit is None


async def test_storm_of_200_alerts_of_one_incident_costs_a_handful_of_requests(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    g = await make_gatherer()
    base = inc.alert_message(n_alerts=200, pod_labels=True)
    messages = []
    for i, a in enumerate(base["alerts"]):
        messages.append(
            WebhookMessage.model_validate(
                {**base, "alerts": [a], "groupKey": f"{base['groupKey']}-{i}"}
            )
        )
    t = received(inc)
    bundles = await asyncio.gather(
        *(g.gather(m, t + timedelta(milliseconds=i * 7), 5) for i, m in enumerate(messages))
    )
    total = sum(d.count("/api/") + d.count("/loki/") for d in doubles.all)
    assert total <= 25, {d.url: dict(d.counts) for d in doubles.all}
    assert all(b.culprit is not None and b.culprit.service == "ledger" for b in bundles)


async def test_generator_url_host_is_never_contacted(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    inc = doubles.load(Incident())
    trap = PrometheusDouble()
    await trap.start()
    try:
        msg = inc.alert_message()
        msg["alerts"][0]["generatorURL"] = f"{trap.url}/graph?g0.expr=" + quote_plus(inc.expr)
        b = await (await make_gatherer()).gather(
            WebhookMessage.model_validate(msg), received(inc), 5
        )
    finally:
        await trap.stop()
    assert b.culprit is not None
    assert trap.count("/") == 0
    assert doubles.prom.count("/api/v1/query_exemplars") >= 1


async def test_backend_calls_are_timed_in_the_latency_histogram(
    make_gatherer: GathererFactory,
    doubles: Doubles,
) -> None:
    def count() -> float:
        return (
            REGISTRY.get_sample_value(
                "enricher_backend_request_seconds_count",
                {"backend": "tempo", "endpoint": "trace_by_id", "outcome": "ok"},
            )
            or 0.0
        )

    inc = doubles.load(Incident())
    before = count()
    await run(await make_gatherer(), inc)
    assert count() - before == 6
