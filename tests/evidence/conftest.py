"""Fixtures of the evidence tests: doubles on free loopback ports and a Gatherer factory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enricher.evidence import Gatherer
from enricher.sources.config import SourcesConfig
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.scenario import Incident
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


@dataclass
class Doubles:
    """The four backends of one test, and the way to fill them with an incident."""

    prom: PrometheusDouble
    tempo: TempoDouble
    loki: LokiDouble
    grafana: GrafanaDouble

    @property
    def all(self) -> tuple[PrometheusDouble, TempoDouble, LokiDouble, GrafanaDouble]:
        return (self.prom, self.tempo, self.loki, self.grafana)

    def load(self, inc: Incident) -> Incident:
        inc.build().load(self.prom, self.tempo, self.loki, self.grafana)
        return inc


@pytest.fixture
def doubles(
    prom: PrometheusDouble, tempo: TempoDouble, loki: LokiDouble, grafana: GrafanaDouble
) -> Doubles:
    return Doubles(prom, tempo, loki, grafana)


@pytest.fixture
async def make_gatherer(doubles: Doubles) -> AsyncIterator[GathererFactory]:
    """Build a started Gatherer against the doubles; keyword overrides go into SourcesConfig."""
    made: list[Gatherer] = []

    async def make(deploys: Any = None, **overrides: Any) -> Gatherer:
        cfg: dict[str, Any] = {
            "prometheus": {"url": doubles.prom.url},
            "tempo": {"url": doubles.tempo.url, "backoff": 0.01},
            "loki": {"url": doubles.loki.url},
            "grafana": {"url": doubles.grafana.url},
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
