"""A store that refuses writes for a while, and SIGTERM with jobs still queued.

A job whose store write fails keeps its page in memory and retries the write in its worker,
so the page goes out seconds after the store recovers, not a lease (a minute) later, and
its evidence is gathered once. The shutdown grace period is spent paging queued jobs too,
with stages cut to the time left; what cannot be paged is released and pages, once, on the
next start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from enricher.pipeline.stages import GatherInput, GatherOutput, NoAnalysis
from enricher.pipeline.worker import SHUTDOWN_REASON
from enricher.store.base import StoreError
from tests.conftest import Recorder, checkout_bundle, post, service_of, webhook_body

# -- a full disk that recovers --------------------------------------------------------------


async def _disk_full(store: Any) -> None:
    """The database can no longer grow: SQLite fails writes with SQLITE_FULL, as on a full
    disk (in-place updates such as lease renewals still fit)."""
    await store._test_limit_pages()


async def _disk_freed(store: Any) -> None:
    await store._write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))


class FillsTheDisk:
    """Evidence too large to fit once the disk is full: gathering it is what the retry must
    not repeat. The disk fills while the gather runs, so the writes that follow fail."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls = 0
        self.full = asyncio.Event()
        # Incompressible, so storing it (checkpoint or page) needs new database pages.
        self.finding = os.urandom(30_000).hex()

    async def gather(self, inp: GatherInput) -> GatherOutput:
        self.calls += 1
        await _disk_full(self.store)
        self.full.set()
        bundle = checkout_bundle()
        bundle.findings = [*bundle.findings, self.finding]
        return GatherOutput(bundle=bundle)


async def test_a_page_goes_out_soon_after_a_full_disk_recovers_not_a_lease_later(
    make_client, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="enricher.pipeline")
    rec = Recorder()
    client = await make_client(
        {
            "data_dir": str(tmp_path / "d"),
            "pipeline": {"lease": 30, "deadlines": {"default": 30}, "shutdown_grace": 1},
        },
        notifiers=[rec],
        analyser=NoAnalysis(),
    )
    svc = service_of(client)
    gatherer = FillsTheDisk(svc.store)
    svc.pipeline.gatherer = gatherer
    assert (await post(client, webhook_body())).status == 200
    await asyncio.wait_for(gatherer.full.wait(), 5)
    await asyncio.sleep(1.5)  # the disk stays full
    assert rec.pages == []

    await _disk_freed(svc.store)
    recovered = time.monotonic()
    await asyncio.wait_for(rec.event.wait(), 5)  # the lease is 30 s: only a retry gets here
    to_page = time.monotonic() - recovered
    print(f"store recovery to page: {to_page:.2f}s")
    assert to_page < 5.0
    await asyncio.sleep(1.0)  # room for a second page to show up
    [page] = rec.pages
    assert gatherer.calls == 1, "the evidence was gathered once, kept across the retries"
    assert page.evidence is not None and gatherer.finding in page.evidence.findings
    stored = await svc.store.get_page(page.id)
    assert stored is not None and [d.state for d in stored.deliveries] == ["sent"]
    assert await svc.store.backlog() == 0
    failed = [r for r in caplog.records if "the job waits in its worker" in r.getMessage()]
    assert len(failed) == 1, "the store did refuse the page, and the job logged it once"
    # SQLite rolls the transaction back on SQLITE_FULL, so the group commit reports it as
    # a failed commit.
    assert failed[0].error.startswith(("store write failed", "commit failed")), failed[0].error


async def test_store_retries_end_when_the_lease_would_lapse(make_client, tmp_path, caplog):
    """A store that never recovers, renewals failing with it: the worker gives the job up
    before its lease runs out (past it the job may be another worker's)."""
    caplog.set_level(logging.INFO, logger="enricher.pipeline")
    client = await make_client(
        {
            "data_dir": str(tmp_path / "d"),
            "pipeline": {"lease": 2, "shutdown_grace": 0},
        },
        notifiers=[Recorder()],
        analyser=NoAnalysis(),
    )
    svc = service_of(client)

    async def refuse(*_a: Any, **_k: Any) -> Any:
        raise StoreError("store write failed: database or disk is full")

    svc.store.save_page = refuse  # type: ignore[method-assign]
    svc.store.renew = refuse  # type: ignore[method-assign]
    t0 = time.monotonic()
    assert (await post(client, webhook_body())).status == 200

    def gave_up() -> bool:
        return any("retried after its lease" in r.getMessage() for r in caplog.records)

    while not gave_up() and time.monotonic() - t0 < 5:
        await asyncio.sleep(0.05)
    assert gave_up()
    assert time.monotonic() - t0 < 2.0, "gave up before the 2 s lease ran out"
    retries = [r for r in caplog.records if "the job waits in its worker" in r.getMessage()]
    assert len(retries) == 1


# -- SIGTERM with jobs queued -------------------------------------------------------------------


class Gated:
    """Gathers that wait for the test to open the gate, then take `takes` seconds; an alert
    named Hang* never answers (a hung backend)."""

    def __init__(self, takes: float) -> None:
        self.takes = takes
        self.gate = asyncio.Event()
        self.running = 0

    async def gather(self, inp: GatherInput) -> GatherOutput:
        self.running += 1
        if inp.message.alerts[0].labels.get("alertname", "").startswith("Hang"):
            await asyncio.sleep(3600)
        await self.gate.wait()
        await asyncio.sleep(self.takes)
        return GatherOutput()


def _alert(key: str, severity: str, name: str = "CheckoutHighErrorRate") -> dict[str, Any]:
    body = webhook_body(groupKey=key, alert={"labels": {"alertname": name, "severity": severity}})
    body["commonLabels"] = {"alertname": name, "severity": severity}
    return body


async def _until(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def _jobs(data: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(data / "enricher.db") as conn:
        return conn.execute("SELECT id, state, lease_owner FROM jobs ORDER BY id").fetchall()


def _drain_line(caplog: Any) -> logging.LogRecord:
    [line] = [r for r in caplog.records if r.getMessage() == "shutdown drain finished"]
    return line


async def test_sigterm_pages_queued_jobs_within_the_grace_period(make_client, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="enricher.pipeline")
    rec = Recorder()
    gatherer = Gated(takes=0.3)
    data = tmp_path / "d"
    grace = 3.0
    client = await make_client(
        {
            "data_dir": str(data),
            # 3 slots, one kept for critical alerts: two warnings run at a time.
            "pipeline": {"workers": 3, "shutdown_grace": grace, "delivery_reserve": 0.3},
        },
        notifiers=[rec],
        gatherer=gatherer,
        analyser=NoAnalysis(),
    )
    svc = service_of(client)
    assert (await post(client, _alert("hang", "critical", "HangingBackend"))).status == 200
    await _until(lambda: gatherer.running == 1)
    for i in range(6):
        assert (await post(client, _alert(f"w{i}", "warning"))).status == 200
    for i in range(2):
        assert (await post(client, _alert(f"c{i}", "critical"))).status == 200
    await _until(lambda: gatherer.running == 3)  # the hung job and two warnings; 6 queued
    assert rec.pages == []

    gatherer.gate.set()
    t0 = time.monotonic()
    await svc.stop()  # the SIGTERM path: intake refuses, pipeline drains, store closes
    took = time.monotonic() - t0
    print(f"drain of {took:.2f}s (grace {grace}s) paged {len(rec.pages)} of 9 jobs")

    assert sorted(p.id for p in rec.pages) == list(range(1, 10)), "every job paged once"
    assert took < grace + 0.5
    # The queued critical alerts went out before the queued warnings.
    assert [p.severity for p in rec.pages[2:8]] == ["critical"] * 2 + ["warning"] * 4
    hung = next(p for p in rec.pages if p.group_key == "hang")
    assert hung.degraded and SHUTDOWN_REASON in hung.reasons, hung.reasons
    assert "gather: cut short at shutdown" in hung.reasons
    for p in rec.pages:
        assert not p.degraded or SHUTDOWN_REASON in p.reasons, p.reasons
    assert [p.group_key for p in rec.pages if p.degraded] == ["hang"]
    assert {state for _id, state, _owner in _jobs(data)} == {"done"}
    line = _drain_line(caplog)
    assert (line.paged, line.released, line.left) == (9, 0, 0)


async def test_a_short_grace_pages_what_it_can_and_the_rest_pages_once_on_restart(
    make_client, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="enricher.pipeline")
    n = 30
    rec = Recorder()
    gatherer = Gated(takes=0.15)
    data = tmp_path / "d"
    over = {
        "data_dir": str(data),
        "pipeline": {"workers": 2, "shutdown_grace": 0.6, "delivery_reserve": 0.2},
    }
    client = await make_client(over, notifiers=[rec], gatherer=gatherer, analyser=NoAnalysis())
    svc = service_of(client)
    for i in range(n):
        assert (await post(client, _alert(f"g{i}", "critical"))).status == 200
    await _until(lambda: gatherer.running == 2)
    gatherer.gate.set()
    t0 = time.monotonic()
    await svc.stop()
    took = time.monotonic() - t0
    first = [p.id for p in rec.pages]
    print(f"drain of {took:.2f}s (grace 0.6s) paged {len(first)} of {n} jobs")

    assert took < 0.6 + 0.5
    assert len(first) > 2, "queued jobs were paged, not only the two running"
    assert len(first) < n
    for p in rec.pages:
        assert not p.degraded or SHUTDOWN_REASON in p.reasons, p.reasons
    rows = _jobs(data)
    assert sorted(i for i, state, _ in rows if state == "done") == sorted(first)
    left = [(i, state, owner) for i, state, owner in rows if state != "done"]
    assert len(left) == n - len(first)
    assert all(owner is None and state in ("received", "gathering") for _i, state, owner in left)
    line = _drain_line(caplog)
    assert (line.paged, line.left) == (len(first), n - len(first))

    again = Recorder()
    await make_client(over, notifiers=[again], analyser=NoAnalysis())
    await _until(lambda: len(again.pages) >= n - len(first), timeout=10)
    await asyncio.sleep(0.5)  # room for a second page to show up
    counts = collections.Counter(first + [p.id for p in again.pages])
    assert sorted(counts) == list(range(1, n + 1))
    assert set(counts.values()) == {1}, counts
