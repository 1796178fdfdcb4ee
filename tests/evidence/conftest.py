"""Fixtures of the evidence tests: doubles on free loopback ports and a Gatherer factory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from enricher.pipeline.gather import Gatherer
from enricher.sources.config import SourcesConfig
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.tempo import TempoDouble

FIXTURES = (
    Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "real" / "checkout-slow-query"
)
if not FIXTURES.exists():  # the checkout layout: <root>/main and <root>/shared
    FIXTURES = Path("/work/shared/fixtures/real/checkout-slow-query")


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
async def prom() -> AsyncIterator[PrometheusDouble]:
    d = PrometheusDouble()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def tempo() -> AsyncIterator[TempoDouble]:
    d = TempoDouble()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def loki() -> AsyncIterator[LokiDouble]:
    d = LokiDouble()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def grafana() -> AsyncIterator[GrafanaDouble]:
    d = GrafanaDouble()
    await d.start()
    yield d
    await d.stop()


GathererFactory = Callable[..., Awaitable[Gatherer]]


@pytest.fixture
async def make_gatherer(
    prom: PrometheusDouble, tempo: TempoDouble, loki: LokiDouble, grafana: GrafanaDouble
) -> AsyncIterator[GathererFactory]:
    """Build a started Gatherer against the doubles; keyword overrides go into SourcesConfig."""
    made: list[Gatherer] = []

    async def make(deploys: Any = None, **overrides: Any) -> Gatherer:
        cfg: dict[str, Any] = {
            "prometheus": {"url": prom.url},
            "tempo": {"url": tempo.url, "backoff": 0.01},
            "loki": {"url": loki.url},
            "grafana": {"url": grafana.url},
        }
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
        g = Gatherer(SourcesConfig.model_validate(cfg), deploys=deploys)
        await g.start()
        made.append(g)
        return g

    yield make
    for g in made:
        await g.close()
