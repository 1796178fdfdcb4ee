"""live: rules against a Prometheus; HTTP answers from `responses`, one run against the real one."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from enricher.lint.cli import main
from enricher.lint.live import Live
from tests.lint.conftest import GOOD_ALERT, of, rule, rules_yaml, run_rules

URL = "http://prometheus.test:9090"
_COUNT = re.compile(r"^count\(last_over_time\((.*)\[\w+\]\)\)$")


class FakePrometheus:
    """Answers the four endpoints the live check uses from plain dicts."""

    def __init__(
        self,
        series: dict[str, int],
        metadata: dict[str, str] | None = None,
        exemplars: dict[str, int] | None = None,
    ) -> None:
        self.series = series  # selector text -> number of series
        self.metadata = metadata or {}
        self.exemplars = exemplars or {}
        self.queries: list[str] = []

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add(responses.GET, f"{URL}/api/v1/status/buildinfo", json={"status": "success"})
        rsps.add_callback(responses.GET, f"{URL}/api/v1/query", callback=self._query)
        rsps.add_callback(responses.GET, f"{URL}/api/v1/metadata", callback=self._metadata)
        rsps.add_callback(responses.GET, f"{URL}/api/v1/query_exemplars", callback=self._exemplars)

    @staticmethod
    def _params(request) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}

    def _query(self, request):
        query = self._params(request)["query"]
        self.queries.append(query)
        m = _COUNT.match(query)
        assert m, query
        n = self.series.get(m.group(1), 0)
        result = [{"metric": {}, "value": [time.time(), str(n)]}] if n else []
        return 200, {}, json.dumps({"status": "success", "data": {"result": result}})

    def _metadata(self, request):
        name = self._params(request).get("metric", "")
        data = (
            {name: [{"type": self.metadata[name], "help": "", "unit": ""}]}
            if name in self.metadata
            else {}
        )
        return 200, {}, json.dumps({"status": "success", "data": data})

    def _exemplars(self, request):
        n = self.exemplars.get(self._params(request)["query"], 0)
        data = (
            [
                {
                    "seriesLabels": {},
                    "exemplars": [{"labels": {"trace_id": "ab"}, "value": "1", "timestamp": 1}] * n,
                }
            ]
            if n
            else []
        )
        return 200, {}, json.dumps({"status": "success", "data": data})


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        prom = FakePrometheus({})
        prom.install(rsps)
        yield prom


def live_findings(*rules: dict) -> list:
    return of(run_rules(*rules, prometheus=Live(URL)), "live")


ERRORS = 'http_requests_total{service="checkout",status=~"5.."}'
TOTAL = 'http_requests_total{service="checkout"}'


def test_rule_whose_series_exist_with_exemplars_is_clean(fake: FakePrometheus) -> None:
    fake.series.update(
        {ERRORS: 3, TOTAL: 9, f'{ERRORS[:-1]},service!=""}}': 3, f'{TOTAL[:-1]},service!=""}}': 9}
    )
    fake.metadata["http_requests"] = "counter"
    fake.exemplars[ERRORS] = 4
    assert live_findings(rule()) == []


def test_metric_without_series_is_reported(fake: FakePrometheus) -> None:
    found = live_findings(rule(expr="sum(rate(http_requests_totl[5m])) > 1"))
    assert [f.message for f in found] == ["`http_requests_totl` has no series in the last 2h"]


def test_matcher_that_filters_everything_is_reported(fake: FakePrometheus) -> None:
    fake.series["http_requests_total"] = 12
    found = live_findings(rule(expr='sum(rate(http_requests_total{service="chekout"}[5m])) > 1'))
    assert [f.message for f in found] == [
        '`http_requests_total{service="chekout"}` matched no series in the last 2h '
        "(http_requests_total has 12)"
    ]


def test_rate_over_a_gauge_by_metadata_is_an_error(fake: FakePrometheus) -> None:
    fake.series["checkout_inflight"] = 2
    fake.metadata["checkout_inflight"] = "gauge"
    found = live_findings(
        rule(expr="sum(rate(checkout_inflight[5m])) > 1", labels={"severity": "warning"})
    )
    assert [f.message for f in found] == [
        "rate() over `checkout_inflight`, which Prometheus' metadata says is a gauge"
    ]


def test_page_on_series_without_exemplars_is_reported(fake: FakePrometheus) -> None:
    fake.series.update({ERRORS: 3, TOTAL: 9, f'{ERRORS[:-1]},service!=""}}': 3})
    found = live_findings(rule())
    assert len(found) == 1
    assert found[0].message.startswith("no exemplars for http_requests_total{service=")
    assert "the enricher will find no trace" in found[0].message


def test_template_label_missing_from_the_series_is_reported(fake: FakePrometheus) -> None:
    fake.series["up"] = 3
    alert = rule(
        expr="up == 0",
        labels={"severity": "warning"},
        annotations={"summary": "{{ $labels.pod }} down"},
    )
    found = live_findings(alert)
    assert [f.message for f in found] == [
        "'summary' prints `$labels.pod`, but no series the query reads has a `pod` label "
        "in the last 2h"
    ]


def test_metrics_recorded_in_the_linted_files_are_not_looked_up(fake: FakePrometheus) -> None:
    record = {"record": "service:errors:ratio5m", "expr": "sum by (service) (rate(x_total[5m]))"}
    alert = rule(
        expr='service:errors:ratio5m{service="checkout"} > 0.05', labels={"severity": "warning"}
    )
    fake.series["x_total"] = 1
    findings = of(run_rules(record, alert, prometheus=Live(URL)), "live")
    assert findings == []
    assert not any("service:errors:ratio5m" in q for q in fake.queries)


def test_answers_are_cached_across_rules(fake: FakePrometheus) -> None:
    fake.series["up"] = 1
    r1 = rule(
        alert="A", expr="up == 0", labels={"severity": "warning"}, annotations={"summary": "x"}
    )
    r2 = rule(alert="B", expr="up == 0", labels={"severity": "info"}, annotations={"summary": "x"})
    run_rules(r1, r2, prometheus=Live(URL))
    assert fake.queries.count("count(last_over_time(up[2h]))") == 1


def test_unreachable_prometheus_is_exit_code_2() -> None:
    err = io.StringIO()
    code = main(
        ["--prometheus", "http://127.0.0.1:9", "-"],
        stdin=io.StringIO(rules_yaml(GOOD_ALERT)),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 2
    assert "cannot reach Prometheus" in err.getvalue()


def test_live_check_does_not_run_without_prometheus() -> None:
    assert of(run_rules(rule(expr="sum(rate(nonexistent_total[5m])) > 1")), "live") == []


# --- against a real Prometheus -------------------------------------------------------------

EXPOSITION = """\
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{service="checkout",le="0.1"} 5 # {trace_id="4bf9"} 0.05
http_request_duration_seconds_bucket{service="checkout",le="+Inf"} 7 # {trace_id="00f0"} 0.4
http_request_duration_seconds_sum{service="checkout"} 1.5
http_request_duration_seconds_count{service="checkout"} 7
# TYPE checkout_inflight gauge
checkout_inflight{service="checkout"} 3
# TYPE http_requests counter
http_requests_total{service="checkout",status="500"} 3
# EOF
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPOSITION.encode()
        self.send_response(200)
        self.send_header(
            "Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


REAL_RULES = rules_yaml(
    rule(
        alert="CheckoutHighLatency",
        expr=(
            "histogram_quantile(0.99, sum by (le, service) ("
            'rate(http_request_duration_seconds_bucket{service="checkout"}[1m]))) > 0.5'
        ),
    ),
    rule(alert="CheckoutErrors"),  # the counter has no exemplars
    rule(
        alert="InflightRate",
        expr='sum by (service) (rate(checkout_inflight{service="checkout"}[1m])) > 1',
        labels={"severity": "warning", "team": "payments", "service": "checkout"},
    ),
    rule(
        alert="Renamed",
        expr="sum by (service) (rate(http_server_duration_seconds_bucket[1m])) > 1",
        labels={"severity": "warning", "team": "payments", "service": "checkout"},
    ),
    rule(
        alert="PodTemplate",
        expr='checkout_inflight{service="checkout"} > 100',
        labels={"severity": "warning", "team": "payments", "service": "checkout"},
        annotations={"summary": "{{ $labels.pod }} has too many requests in flight"},
    ),
)


@pytest.mark.skipif(
    not Path("/usr/bin/prometheus").exists() and shutil.which("prometheus") is None,
    reason="needs the prometheus binary (Debian package `prometheus`)",
)
def test_live_mode_against_real_prometheus(tmp_path: Path, metrics_target: str) -> None:
    from tests.realstack import Prometheus, wait_until

    with Prometheus(tmp_path / "prom", scrape_targets=[metrics_target]) as prom:

        def scraped() -> bool:
            q = "count(http_request_duration_seconds_bucket)"
            url = f"{prom.url}/api/v1/query?q={q}".replace("?q=", "?query=")
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(json.load(resp)["data"]["result"])

        wait_until(scraped, 30, what="first scrape")
        (tmp_path / "rules.yml").write_text(REAL_RULES)
        out, err = io.StringIO(), io.StringIO()
        code = main(
            [
                str(tmp_path / "rules.yml"),
                "--prometheus",
                prom.url,
                "--format",
                "json",
                "--enable",
                "live",
            ],
            stdout=out,
            stderr=err,
        )
    findings = {(f["rule"], f["message"]) for f in json.loads(out.getvalue())["findings"]}
    assert code == 1, err.getvalue()
    by_rule: dict[str, list[str]] = {}
    for name, message in findings:
        by_rule.setdefault(name, []).append(message)
    assert "CheckoutHighLatency" not in by_rule  # series, histogram type and exemplars all there
    assert any(
        m.startswith("no exemplars for http_requests_total") for m in by_rule["CheckoutErrors"]
    )
    assert by_rule["InflightRate"] == [
        "rate() over `checkout_inflight`, which Prometheus' metadata says is a gauge"
    ]
    assert by_rule["Renamed"] == [
        "`http_server_duration_seconds_bucket` has no series in the last 2h"
    ]
    assert by_rule["PodTemplate"] == [
        "'summary' prints `$labels.pod`, but no series the query reads has a `pod` label "
        "in the last 2h"
    ]
