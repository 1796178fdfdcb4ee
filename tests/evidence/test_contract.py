"""Contract tests: every recorded answer through our parsers, and the doubles held to them.

The recordings come from real Prometheus 2.42, Tempo 3.1 and Loki 3. If a parser stops
understanding one, or a double drifts from the recorded shape, status or content type, the
gather tests that rely on the doubles would be testing fiction; these tests catch that.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from enricher.analysis.spans import analyse_traces
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import LokiSourceConfig, TempoSourceConfig
from enricher.sources.deploys import from_build_info
from enricher.sources.http import BackendError, HttpBackend, HttpResponse
from enricher.sources.loki import parse_streams
from enricher.sources.prometheus import parse_exemplars, parse_rules, parse_samples
from enricher.sources.promql import analyse_expression, expr_from_generator_url, match_rule
from enricher.sources.tempo import TempoClient, parse_search, parse_trace
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.tempo import TempoDouble, otlp_from_tempo
from tests.evidence.conftest import FIXTURES, fixture_json

TRACE_ID = "b22fc2a2caac4451e1a7afb90ea05a3b"


def meta(name: str) -> dict[str, Any]:
    return fixture_json(f"{name}.meta.json")


def recorded(name: str) -> HttpResponse:
    m = meta(name)
    body_file = next(p for p in FIXTURES.glob(f"{name}.*") if not p.name.endswith(".meta.json"))
    return HttpResponse(
        status=m["status"],
        content_type=m["content_type"],
        body=body_file.read_bytes(),
        url=m["request"]["path"],
    )


def paths(x: Any, prefix: str = "") -> set[str]:
    """Every leaf path with its JSON type: the shape of a document, independent of values."""
    if isinstance(x, dict):
        out: set[str] = {f"{prefix}{{}}"} if not x else set()
        for k, v in x.items():
            out |= paths(v, f"{prefix}.{k}")
        return out
    if isinstance(x, list):
        out = {f"{prefix}[]"} if not x else set()
        for v in x:
            out |= paths(v, f"{prefix}[]")
        return out
    return {f"{prefix}:{type(x).__name__}"}


# --- every recorded file has a parser -------------------------------------------------------

PARSED_BY = {
    "alertmanager-webhook-0.json": "webhook",
    "alertmanager-webhook-1.json": "webhook",
    "chosen.json": "exemplar ranking",
    "loki-bad-query.txt": "loki 400",
    "loki-by-trace-line-filter.json": "parse_streams",
    "loki-by-trace-structured-metadata.json": "parse_streams",
    "loki-service-errors.json": "parse_streams",
    "prometheus-query-build_info.json": "parse_samples",
    "prometheus-query_exemplars-bad-query.json": "prometheus envelope",
    "prometheus-query_exemplars-errors.json": "parse_exemplars",
    "prometheus-query_exemplars-expr.json": "parse_exemplars",
    "prometheus-query_exemplars-latency.json": "parse_exemplars",
    "prometheus-rules.json": "parse_rules",
    "tempo-search-traceql.json": "parse_search",
    "tempo-trace-badid.txt": "tempo 400",
    "tempo-trace-notfound.json": "parse_trace",
    "tempo-trace-v1.json": "parse_trace",
    "tempo-trace-v2.json": "parse_trace",
    # JSON is the format we ask for (Accept: application/json); protobuf is not parsed.
    "tempo-trace-v2-protobuf.pb": "not requested",
    "alertmanager.yml": "config",
    "prometheus.yml": "config",
    "rules.yml": "config",
}


def test_every_recorded_file_is_covered_by_a_contract_test() -> None:
    files = {p.name for p in FIXTURES.iterdir() if not p.name.endswith(".meta.json")}
    assert files == set(PARSED_BY), files ^ set(PARSED_BY)


# --- parsers ----------------------------------------------------------------------------------


def test_recorded_trace_v2_and_v1_yield_the_db_culprit_with_its_attributes() -> None:
    for name in ("tempo-trace-v2", "tempo-trace-v1"):
        trace = parse_trace(TRACE_ID, json.loads(recorded(name).body))
        assert trace is not None and len(trace.spans) == 4
        culprit = analyse_traces([trace]).culprit
        assert culprit is not None
        span = culprit.span
        assert (span.service, span.name) == ("db-primary", "SELECT orders")
        assert 1150 < span.duration_ms < 1250
        assert span.attributes["feature_flag.new_checkout"] is True
        assert span.attributes["db.rows_affected"] == 1110482
        assert span.attributes["db.query.text"] == "SELECT * FROM orders WHERE user_id=$1"
        assert span.exceptions[0].type == "QueryCanceledError"
        root = next(s for s in trace.spans if s.parent_id is None)
        assert root.span_id == "83910698cac52cb0"  # base64 'g5EGmMrFLLA=' decoded to hex
        assert root.resource["service.version"] == "2.4.1"
        assert root.resource["vcs.ref.head.revision"] == "7a3f9c2"


def test_recorded_not_found_and_bad_id_become_outcomes_not_errors() -> None:
    client = TempoClient(HttpBackend("tempo", TempoSourceConfig(), None, 0), TempoSourceConfig())
    nf = client._trace_result(
        "0123456789abcdef0123456789abcdef", recorded("tempo-trace-notfound"), "q"
    )
    assert nf.outcome == "not_found"
    bad = client._trace_result("not-a-trace-id", recorded("tempo-trace-badid"), "q")
    assert bad.outcome == "bad_id" and "hex characters" in bad.detail


def test_recorded_search_hits_have_hex_ids() -> None:
    hits = parse_search(json.loads(recorded("tempo-search-traceql").body))
    assert len(hits) == 20
    assert all(len(h.trace_id) == 32 and h.root_service == "checkout" for h in hits)
    assert all(h.duration_ms > 1000 for h in hits)


def test_recorded_trace_logs_keep_provenance_and_the_slow_query_line() -> None:
    cfg = LokiSourceConfig()
    for name in ("loki-by-trace-structured-metadata", "loki-by-trace-line-filter"):
        res = parse_streams(
            recorded(name), meta(name)["request"]["params"]["query"], cfg.service_label
        )
        by_service = {ln.service: ln for ln in res.lines}
        db = by_service["db-primary"]
        assert db.line.startswith("slow query: seq scan on orders (1.1M rows), index not used")
        assert db.span_id == "4b6ece001ea02a69" and db.trace_id == TRACE_ID
        assert db.ts_ns == 1795796463819021155
        assert by_service["checkout"].labels["env"] == "prod"


def test_recorded_service_errors_parse_every_line() -> None:
    res = parse_streams(recorded("loki-service-errors"), "q", "service_name")
    doc = fixture_json("loki-service-errors.json")
    assert len(res.lines) == sum(len(s["values"]) for s in doc["data"]["result"]) == 100


def test_recorded_loki_400_is_a_bad_query_text() -> None:
    r = recorded("loki-bad-query")
    assert r.status == 400 and r.content_type.startswith("text/plain")
    assert r.text().startswith("parse error at line 1")


def test_recorded_exemplars_parse_and_rank_the_chosen_trace_first() -> None:
    from enricher.sources.prometheus import rank_exemplars

    msg = WebhookMessage.model_validate(fixture_json("alertmanager-webhook-1.json"))
    alert = msg.alerts[0]
    aq = analyse_expression(expr_from_generator_url(alert.generatorURL) or "", alert.labels)
    series = parse_exemplars(recorded("prometheus-query_exemplars-errors"))
    sel = rank_exemplars(series, aq, 3, 3, ["trace_id"])
    chosen = fixture_json("chosen.json")
    assert sel.suspects[0].trace_id == chosen["chosen_trace_id"]
    assert {s.trace_id for s in sel.suspects} <= set(chosen["all_error_exemplar_trace_ids"])
    assert "504" in sel.suspects[0].reason
    for name in ("prometheus-query_exemplars-latency", "prometheus-query_exemplars-expr"):
        assert len(parse_exemplars(recorded(name))) == 4


def test_recorded_prometheus_error_envelope_is_a_bad_request() -> None:
    with pytest.raises(BackendError) as err:
        parse_exemplars(recorded("prometheus-query_exemplars-bad-query"))
    assert err.value.kind == "bad_request" and "parse error" in err.value.detail


def test_recorded_rules_match_both_recorded_alerts() -> None:
    rules = parse_rules(recorded("prometheus-rules"))
    for n in (0, 1):
        msg = WebhookMessage.model_validate(fixture_json(f"alertmanager-webhook-{n}.json"))
        rule = match_rule(rules, msg.alerts[0].labels)
        assert rule is not None and rule.name == msg.alerts[0].labels["alertname"]
        aq = analyse_expression(rule.query, msg.alerts[0].labels, "rules")
        assert aq.kind == ("latency" if n == 0 else "error_ratio")
        query = meta(
            "prometheus-query_exemplars-latency" if n == 0 else "prometheus-query_exemplars-errors"
        )["request"]["params"]["query"]
        assert aq.primary.render() == query


def test_recorded_build_info_gives_checkout_version_and_commit() -> None:
    series = parse_samples(recorded("prometheus-query-build_info"), "query")
    sig = from_build_info(
        "checkout", [s for s in series if s.labels["service"] == "checkout"], "version", "commit"
    )
    assert sig is not None and (sig.version, sig.commit) == ("2.4.1", "7a3f9c2")


# --- doubles reproduce the recorded answers ----------------------------------------------------


async def fetch(
    url: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, params={k: str(v) for k, v in (params or {}).items()}, headers=headers) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_tempo_double_answers_trace_by_id_exactly_as_recorded(tempo: TempoDouble) -> None:
    async with aiohttp.ClientSession() as s:
        post = await s.post(
            f"{tempo.url}/v1/traces", json=otlp_from_tempo(fixture_json("tempo-trace-v2.json"))
        )
        assert post.status == 200
    for name in ("tempo-trace-v2", "tempo-trace-v1", "tempo-trace-notfound"):
        m = meta(name)
        status, ctype, body = await fetch(
            tempo.url + m["request"]["path"], headers=m["request"]["headers"]
        )
        assert (status, ctype) == (m["status"], m["content_type"])
        assert json.loads(body) == fixture_json(f"{name}.json")


async def test_tempo_double_rejects_a_bad_id_like_tempo(tempo: TempoDouble) -> None:
    m = meta("tempo-trace-badid")
    status, ctype, body = await fetch(tempo.url + m["request"]["path"])
    assert (status, ctype) == (m["status"], m["content_type"])
    assert body == (FIXTURES / "tempo-trace-badid.txt").read_bytes()


async def test_tempo_double_search_has_the_recorded_shape(tempo: TempoDouble) -> None:
    tempo.ingest(otlp_from_tempo(fixture_json("tempo-trace-v2.json")))
    m = meta("tempo-search-traceql")
    status, ctype, body = await fetch(tempo.url + m["request"]["path"], m["request"]["params"])
    assert (status, ctype) == (m["status"], m["content_type"])
    got, want = json.loads(body), fixture_json("tempo-search-traceql.json")
    assert len(got["traces"]) == 1 and got["traces"][0]["traceID"] == TRACE_ID
    assert paths(got["traces"][0]) == paths(want["traces"][0])
    assert set(got["metrics"]) == set(want["metrics"])


def _push_recorded_trace_logs(loki: LokiDouble) -> None:
    doc = fixture_json("loki-by-trace-structured-metadata.json")
    streams = []
    for s in doc["data"]["result"]:
        labels = {k: v for k, v in s["stream"].items() if k in ("env", "service_name")}
        meta_ = {k: s["stream"][k] for k in ("trace_id", "span_id")}
        streams.append(
            {"stream": labels, "values": [[ts, line, meta_] for ts, line in s["values"]]}
        )
    loki.push({"streams": streams})


async def test_loki_double_answers_trace_queries_exactly_as_recorded(loki: LokiDouble) -> None:
    _push_recorded_trace_logs(loki)
    for name in ("loki-by-trace-structured-metadata", "loki-by-trace-line-filter"):
        m = meta(name)
        status, ctype, body = await fetch(loki.url + m["request"]["path"], m["request"]["params"])
        assert (status, ctype) == (m["status"], m["content_type"])
        got, want = json.loads(body), fixture_json(f"{name}.json")
        assert got["data"]["result"] == want["data"]["result"]
        assert paths(got["data"]["stats"]) == paths(want["data"]["stats"])
        assert set(got) == set(want) and set(got["data"]) == set(want["data"])


async def test_loki_double_rejects_a_bad_query_like_loki(loki: LokiDouble) -> None:
    m = meta("loki-bad-query")
    status, ctype, body = await fetch(loki.url + m["request"]["path"], m["request"]["params"])
    assert (status, ctype) == (m["status"], m["content_type"])
    assert body == (FIXTURES / "loki-bad-query.txt").read_bytes()


async def test_prometheus_double_exemplars_have_the_recorded_shape(prom: PrometheusDouble) -> None:
    want = fixture_json("prometheus-query_exemplars-errors.json")
    for s in want["data"]:
        for e in s["exemplars"]:
            prom.add_exemplar(s["seriesLabels"], e["labels"], float(e["value"]), e["timestamp"])
    m = meta("prometheus-query_exemplars-errors")
    status, ctype, body = await fetch(prom.url + m["request"]["path"], m["request"]["params"])
    assert (status, ctype) == (m["status"], m["content_type"])
    got = json.loads(body)
    assert paths(got) == paths(want)
    assert [e["labels"] for e in got["data"][0]["exemplars"]] == [
        e["labels"] for e in want["data"][0]["exemplars"]
    ]
    m = meta("prometheus-query_exemplars-bad-query")
    status, ctype, body = await fetch(prom.url + m["request"]["path"], m["request"]["params"])
    assert (status, ctype) == (m["status"], m["content_type"])
    assert json.loads(body) == fixture_json("prometheus-query_exemplars-bad-query.json")
