"""Benchmark of the gather stage against doubles answering in 20 ms on loopback.

Run: `python bench/gather.py [--latency 0.02] [--runs 30]` from the repository root.

The doubles (Prometheus, Tempo, Loki, Grafana) run in a separate process so their CPU does
not share the gatherer's interpreter lock. Reported:
  1. one alert at a time, caches off (every gather pays every backend round trip);
  2. 200 concurrent alert groups of ONE incident (an alert storm: coalescing and caching);
  3. 200 concurrent alert groups of 200 DIFFERENT incidents (no sharing possible), with the
     default per-backend concurrency of 8 and with 64;
  4. size: bundle tokens versus the raw trace and log data the gather read (compression),
     and whether the culprit evidence (span and its log line) survived the budget.
Goals: p50 <= 100 ms, p99 <= 300 ms; compression >= 5x with the culprit kept.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enricher.evidence import Gatherer
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import SourcesConfig
from tests.doubles.scenario import Dep, Incident

N_DISTINCT = 200


def incidents() -> list[Incident]:
    """Incident 0 is the storm's; 1..200 are distinct services for the no-sharing run."""
    out = [Incident(seed=1)]
    for i in range(N_DISTINCT):
        out.append(
            Incident(service=f"svc{i}", seed=100 + i, failing=4, healthy=4, end=Incident().end + i)
        )
    return [*out, big_incident()]


def big_incident() -> Incident:
    """A production-sized request: 80 downstream calls per trace, 3,000 error lines."""
    deps = [
        Dep(
            f"svc-{i % 12}",
            f"call {i}",
            2 + i % 7,
            {"http.request.method": "GET", "url.full": f"http://svc-{i % 12}/api/{i}"},
        )
        for i in range(80)
    ]
    deps.append(
        Dep(
            "orders-db",
            "SELECT orders",
            12,
            {"db.system": "postgresql", "db.query.text": "SELECT * FROM orders WHERE id=$1"},
        )
    )
    return Incident(
        service="bigshop",
        deps=deps,
        culprit="orders-db:SELECT orders",
        background="svc-3:call 3",
        extra_log_lines=3000,
        seed=9,
        end=Incident().end + 5000,
    )


def serve_doubles(latency: float, conn: Any) -> None:
    """Child process: start the doubles, load every incident, report URLs, serve forever."""
    from tests.doubles.grafana import GrafanaDouble
    from tests.doubles.loki import LokiDouble
    from tests.doubles.prometheus import PrometheusDouble
    from tests.doubles.tempo import TempoDouble

    async def main() -> None:
        ds = [
            PrometheusDouble(latency),
            TempoDouble(latency),
            LokiDouble(latency),
            GrafanaDouble(latency),
        ]
        for d in ds:
            await d.start()
        for inc in incidents():
            inc.build().load(*ds)  # type: ignore[arg-type]
        conn.send([d.url for d in ds])
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())


def size_report(name: str, b: Any, wire: dict[str, int]) -> None:
    raw_content = b.stats.raw_trace_bytes + b.stats.raw_log_bytes
    raw_wire = wire["tempo"] + wire["loki"]
    tokens = b.budget.tokens_estimated
    culprit_kept = b.culprit is not None and b.item(b.culprit.item_id) is not None
    culprit_log_kept = bool(b.culprit and any(b.item(i) for i in b.culprit.log_item_ids))
    print(
        f"   {name}: raw trace+log content {raw_content} B (~{raw_content // 4} tokens), "
        f"wire {raw_wire} B (~{raw_wire // 4} tokens); bundle {tokens} tokens "
        f"(budget {b.budget.token_budget}), {b.budget.items_kept} items kept, "
        f"{b.budget.items_dropped} dropped"
    )
    print(
        f"     compression {raw_content / 4 / tokens:.1f}x of content, "
        f"{raw_wire / 4 / tokens:.1f}x of wire bytes; culprit span kept={culprit_kept}, "
        f"culprit log kept={culprit_log_kept} "
        f"({b.culprit.service + ':' + b.culprit.operation if b.culprit else '-'})"
    )


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def fmt(name: str, xs: list[float]) -> str:
    return (
        f"{name:<58} n={len(xs):<4} p50={pct(xs, 0.5) * 1000:7.1f} ms  "
        f"p99={pct(xs, 0.99) * 1000:7.1f} ms  max={max(xs) * 1000:7.1f} ms"
    )


def gatherer(urls: list[str], **over: Any) -> Gatherer:
    cfg: dict[str, Any] = {
        "prometheus": {"url": urls[0]},
        "tempo": {"url": urls[1]},
        "loki": {"url": urls[2]},
        "grafana": {"url": urls[3]},
    }
    for k, v in over.items():
        if k == "backend":  # applies to every backend
            for b in ("prometheus", "tempo", "loki", "grafana"):
                cfg[b].update(v)
        elif isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return Gatherer(SourcesConfig.model_validate(cfg))


async def timed(g: Gatherer, inc: Incident, received: datetime, **msg: Any) -> tuple[float, Any]:
    m = WebhookMessage.model_validate(inc.alert_message(**msg))
    t0 = time.perf_counter()
    b = await g.gather(m, received, 8.0)
    return time.perf_counter() - t0, b


async def bench(urls: list[str], runs: int, latency: float) -> None:
    incs = incidents()
    for inc in incs:
        inc.build()
    storm = incs[0]
    recv = datetime.fromtimestamp(storm.end, UTC)

    # 1. one alert at a time, nothing cached
    g = gatherer(urls, cache_ttl=0)
    await g.start()
    await timed(g, storm, recv)  # connection warm-up
    lat = []
    c0 = time.process_time()
    for _ in range(runs):
        dt, b = await timed(g, storm, recv)
        lat.append(dt)
    cpu = (time.process_time() - c0) / runs
    print(fmt("1 alert at a time (cache off)", lat) + f"  gatherer cpu={cpu * 1000:.1f} ms/alert")
    sent0 = dict(g.requests_sent())
    bytes0 = {k: v.bytes_received for k, v in g.http.items()}
    _, b = await timed(g, storm, recv)
    sent = {k: g.requests_sent()[k] - sent0[k] for k in sent0}
    wire = {k: g.http[k].bytes_received - bytes0[k] for k in bytes0}
    await g.close()

    print(f"   requests per gather: {sent}")
    size_report("small incident (5 spans/trace)", b, wire)
    g = gatherer(urls, cache_ttl=0, loki={"error_limit": 5000})
    await g.start()
    big = incs[-1]
    bytes0 = {k: v.bytes_received for k, v in g.http.items()}
    dt, bb = await timed(g, big, datetime.fromtimestamp(big.end, UTC))
    wire = {k: g.http[k].bytes_received - bytes0[k] for k in bytes0}
    print(f"   big incident gather: {dt * 1000:.0f} ms")
    size_report("big incident (82 spans/trace, 3,000 error lines)", bb, wire)
    await g.close()

    # 2. storm: 200 groups of one incident, concurrently, fresh gatherer (cold cache)
    g = gatherer(urls)
    await g.start()
    msgs = storm.alert_message(n_alerts=N_DISTINCT, pod_labels=True)
    t0 = time.perf_counter()

    async def one(i: int) -> float:
        m = WebhookMessage.model_validate(
            {**msgs, "alerts": [msgs["alerts"][i]], "groupKey": f"g{i}"}
        )
        s = time.perf_counter()
        await g.gather(m, recv, 8.0)
        return time.perf_counter() - s

    c0 = time.process_time()
    lat = await asyncio.gather(*(one(i) for i in range(N_DISTINCT)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    print(
        fmt("200 concurrent groups, one incident (storm)", list(lat))
        + f"  wall={wall * 1000:.0f} ms  backend requests={sum(g.requests_sent().values())}"
        + f"  gatherer cpu={cpu * 1000:.0f} ms ({cpu / N_DISTINCT * 1e6:.0f} us/alert)"
    )
    await g.close()

    # 3. 200 distinct incidents concurrently
    for conc in (8, 64):
        g = gatherer(urls, **{"backend": {"concurrency": conc}})
        await g.start()
        t0 = time.perf_counter()
        c0 = time.process_time()
        res = await asyncio.gather(
            *(timed(g, inc, datetime.fromtimestamp(inc.end, UTC)) for inc in incs[1:])
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        found = sum(1 for _, bb in res if bb.culprit is not None)
        print(
            fmt(f"200 concurrent groups, 200 incidents, concurrency {conc}", [d for d, _ in res])
            + f"  wall={wall * 1000:.0f} ms  culprits={found}/{len(res)}"
            + f"  timed_out={sum(bb.stats.timed_out for _, bb in res)}"
        )
        # What no scheduling can beat: each backend serves at most `conc` requests per
        # `latency`, and the gatherer's CPU is one core. Distinct incidents share nothing.
        sent = g.requests_sent()
        busiest = max(sent, key=lambda k: sent[k])
        floor = sent[busiest] * latency / conc
        print(
            f"   bound: {busiest} {sent[busiest]} requests at {conc} in flight x "
            f"{latency * 1000:.0f} ms = {floor:.2f} s for all, {floor / 2:.2f} s for the "
            f"median even in the best order; gatherer cpu {cpu:.2f} s "
            f"({cpu / len(res) * 1000:.1f} ms/incident); requests sent {sent}"
        )
        await g.close()
    print(
        f"   median bundle: {statistics.median(bb.budget.tokens_estimated for _, bb in res)} tokens"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.Process(target=serve_doubles, args=(args.latency, child), daemon=True)
    proc.start()
    try:
        urls = parent.recv()
        print(f"doubles answering in {args.latency * 1000:.0f} ms: {urls}")
        asyncio.run(bench(urls, args.runs, args.latency))
    finally:
        proc.terminate()
        proc.join(5)


if __name__ == "__main__":
    main()
