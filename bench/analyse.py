"""Benchmark of the analyse stage without the LLM: the deterministic analyzer's latency.

Run: `python bench/analyse.py [--runs 2000]` from the repository root.

Bundles are built once by the real gatherer against the doubles (in this process; their
latency does not count), from generated incidents of several shapes: a dependency error, a
latency regression, two regressions at once, nothing standing out, and a production-sized
request (80 downstream calls per trace, 3,000 error log lines). Then the analyse stage
(`RootCauseAnalyser.analyse`, as the pipeline calls it) runs on each bundle in turn.
Reported: p50, p99 and max per call, and per bundle shape. Goal: p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gather import big_incident
from enricher.analysis.stage import RootCauseAnalyser
from enricher.bundle.model import EvidenceBundle
from enricher.evidence import Gatherer
from enricher.intake.webhook import WebhookMessage
from enricher.pipeline.stages import AnalyseInput
from enricher.sources.config import SourcesConfig
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.loki import LokiDouble
from tests.doubles.prometheus import PrometheusDouble
from tests.doubles.scenario import Incident, TwoRegressions
from tests.doubles.tempo import TempoDouble


def shapes() -> dict[str, Incident]:
    base = Incident().end
    return {
        "dependency error": Incident(seed=3),
        "latency regression": Incident(mode="latency", service="cart", seed=4, end=base + 1000),
        "two regressions": TwoRegressions(service="shop", seed=5, end=base + 2000),
        "nothing stands out": Incident(
            mode="latency",
            culprit_ms=12.0,
            culprit_attrs={},
            background=None,
            service="quiet",
            seed=6,
            end=base + 3000,
        ),
        "production-sized": big_incident(),
    }


async def bundles() -> dict[str, tuple[WebhookMessage, EvidenceBundle]]:
    doubles = [PrometheusDouble(), TempoDouble(), LokiDouble(), GrafanaDouble()]
    for d in doubles:
        await d.start()
    prom, tempo, loki, grafana = doubles
    out: dict[str, tuple[WebhookMessage, EvidenceBundle]] = {}
    cfg = SourcesConfig.model_validate(
        {
            "prometheus": {"url": prom.url},
            "tempo": {"url": tempo.url},
            "loki": {"url": loki.url},
            "grafana": {"url": grafana.url},
            "cache_ttl": 0,
        }
    )
    g = Gatherer(cfg)
    try:
        for name, inc in shapes().items():
            inc.build().load(prom, tempo, loki, grafana)  # type: ignore[arg-type]
            msg = WebhookMessage.model_validate(inc.alert_message())
            b = await g.gather(msg, datetime.fromtimestamp(inc.end, UTC), 10)
            out[name] = (msg, b)
    finally:
        await g.close()
        for d in doubles:
            await d.stop()
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


async def main(runs: int) -> None:
    built = await bundles()
    stage = RootCauseAnalyser()
    per: dict[str, list[float]] = {k: [] for k in built}
    for _ in range(20):  # warm-up
        for msg, b in built.values():
            await stage.analyse(AnalyseInput(message=msg, bundle=b, budget_s=10))
    for i in range(runs):
        name = list(built)[i % len(built)]
        msg, b = built[name]
        inp = AnalyseInput(message=msg, bundle=b, budget_s=10)
        t0 = time.perf_counter()
        out = await stage.analyse(inp)
        per[name].append((time.perf_counter() - t0) * 1000)
        assert out.analysis is not None
    allv = [x for v in per.values() for x in v]
    print(f"analyse stage without LLM, {len(allv)} calls over {len(built)} bundle shapes")
    print(
        f"  all: p50 {statistics.median(allv):.3f} ms  p99 {pct(allv, 0.99):.3f} ms  "
        f"max {max(allv):.3f} ms  (goal p99 <= 20 ms)"
    )
    for name, v in per.items():
        b = built[name][1]
        a = await stage.analyse(AnalyseInput(message=built[name][0], bundle=b, budget_s=10))
        top = a.analysis.hypotheses[0] if a.analysis else None
        print(
            f"  {name:20s} p50 {statistics.median(v):.3f} ms  p99 {pct(v, 0.99):.3f} ms  "
            f"items {len(b.items):3d}  top: {(top.statement if top else '-')[:70]}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    asyncio.run(main(ap.parse_args().runs))
