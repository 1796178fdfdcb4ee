"""Exemplars through a REAL Prometheus: our exporter -> scrape -> query_exemplars -> our client.

Proves the parts no double can: OpenMetrics negotiation, exemplar storage, and that our
client's query and parsing find the trace ids the exporter attached.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from enricher.sources.config import PrometheusSourceConfig
from enricher.sources.http import HttpBackend
from enricher.sources.prometheus import PrometheusClient
from enricher.sources.promql import analyse_expression
from tests.doubles.exporter import Exporter
from tests.realstack import PROMETHEUS, Prometheus, free_port, have

pytestmark = pytest.mark.skipif(not have(PROMETHEUS), reason="prometheus binary not installed")

EXPR = (
    'sum(rate(http_requests_total{service="checkout",status=~"5.."}[1m])) / '
    'sum(rate(http_requests_total{service="checkout"}[1m])) > 0.05'
)


async def test_exemplars_attached_by_the_exporter_come_back_ranked_through_our_client(
    tmp_path: Path,
) -> None:
    exporter = Exporter()
    port = free_port()
    exporter.start(port)
    try:
        with Prometheus(tmp_path, scrape_targets=[f"127.0.0.1:{port}"]) as prom:
            cfg = PrometheusSourceConfig.model_validate({"url": prom.url})
            async with aiohttp.ClientSession() as session:
                client = PrometheusClient(HttpBackend("prometheus", cfg, session, 0), cfg)
                aq = analyse_expression(EXPR, {"alertname": "E", "service": "checkout"})
                errors, oks = [], []
                # A counter exposes only its latest exemplar per scrape: one request per
                # series per round, then wait until Prometheus has scraped it.
                for n in range(2):
                    err_id, ok_id = f"{n + 1:x}" * 32, f"{n + 10:x}"[-1] * 32
                    exporter.request("checkout", "500", 1.4, err_id)
                    exporter.request("checkout", "200", 0.02, ok_id)
                    errors.append(err_id)
                    oks.append(ok_id)
                    deadline = time.monotonic() + 20
                    while True:
                        now = time.time()
                        sel = await client.select_exemplars(aq, now - 120, now + 5, 5, 5)
                        got = {c.trace_id for c in sel.suspects + sel.healthy}
                        if {err_id, ok_id} <= got:
                            break
                        assert time.monotonic() < deadline, f"exemplars never arrived: {sel}"
                        await asyncio.sleep(0.3)
                assert [c.trace_id for c in sel.suspects] == errors[::-1]  # most recent first
                assert [c.trace_id for c in sel.healthy] == oks[::-1]
                assert all(c.series["status"] == "500" for c in sel.suspects)
                assert sel.query == 'http_requests_total{service="checkout",status=~"5.."}'
    finally:
        exporter.stop()
