"""Workers that take stored jobs through gather -> analyse -> deliver under a lease.

Scheduling: jobs are claimed most urgent severity first, oldest first, and a quarter of the
worker slots are kept for the most urgent severity, so a storm of warnings can fill the rest
but never delays a critical page. Every job has a page deadline; gather and analyse get what
is left of it (minus a reserve for delivery), and whatever is ready then goes out, marked
degraded with the reasons. Leases are renewed while a job runs; a job whose worker died is
claimed again when its lease expires, and on start-up every unfinished job resumes.

A store that refuses writes (a full disk) holds a job in its worker, its page built, retrying
only the writes with backoff: the page goes out as soon as the store recovers, not a lease
later, and its evidence is not gathered twice.

On SIGTERM the grace period is spent paging: queued jobs are still claimed (most urgent
first) and every stage is cut to what is left of the grace, minus the delivery reserve, so a
page whose evidence cannot come in time goes out degraded ("shutting down: ...") rather than
waiting for a restart that may never come on this volume. What is left at the end is
released for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from enricher import logs
from enricher.analysis.model import Analysis
from enricher.bundle.model import EvidenceBundle
from enricher.config import Config
from enricher.intake.webhook import WebhookMessage
from enricher.metrics import Metrics
from enricher.notify.base import Notifier
from enricher.notify.page import Page, build_page
from enricher.notify.routing import Router
from enricher.pipeline.outbox import Outbox
from enricher.pipeline.stages import (
    AnalyseInput,
    Analyser,
    Gatherer,
    GatherInput,
    NoAnalysis,
    NoEvidence,
    run_stage,
)
from enricher.store.base import DeliveryRecord, Job, JobState, PageRecord, StoreError
from enricher.store.sqlite import SQLiteStore

log = logging.getLogger("enricher.pipeline")
T = TypeVar("T")
URGENT = 0
PARSED_LIMIT = 1024  # workers take a few dozen at a time; more only burdens the GC
# Store writes that fail are retried in the worker from this delay, doubling up to the cap:
# short enough that a page goes out within seconds of the store recovering, long enough that
# a full disk is not hammered by every waiting job.
STORE_RETRY_FIRST = 0.2
STORE_RETRY_MAX = 5.0
# Stop retrying this long before our lease would run out (renewals are writes too, and fail
# with the rest): past it the job may be another worker's, so it is left to the lease.
LEASE_MARGIN = 1.0
SHUTDOWN_REASON = "shutting down: evidence cut short"


class _LeaseRunningOut(Exception):
    """Store writes kept failing until the job's lease is about to lapse."""


class Pipeline:
    def __init__(
        self,
        store: SQLiteStore,
        config: Config,
        notifiers: list[Notifier],
        metrics: Metrics,
        gatherer: Gatherer | None = None,
        analyser: Analyser | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.pc = config.pipeline
        self.notifiers = {n.name: n for n in notifiers}
        self.metrics = metrics
        self.gatherer: Gatherer = gatherer or NoEvidence()
        self.analyser: Analyser = analyser or NoAnalysis()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.router = Router(config, available=list(self.notifiers))
        self.outbox = Outbox(
            store,
            self.pc,
            self.notifiers,
            self.router,
            metrics,
            self.owner,
            on_done=lambda _jid: self._wake.set(),
        )
        self.slots = self.pc.workers
        self.reserved = max(1, self.slots // 4) if self.slots > 1 else 0
        self.active: dict[int, tuple[asyncio.Task[None], int]] = {}
        # Until when (loop time) each running job's lease holds, by our last successful
        # claim or renewal: how long a job may keep retrying failed store writes.
        self._lease_until: dict[int, float] = {}
        self._store_log = logs.Throttled(log, every=10.0)
        self._wake = asyncio.Event()
        self._parsed: OrderedDict[int, WebhookMessage] = OrderedDict()
        self._stopping = False
        # The shutdown drain: its end (loop time) once stop() began one, the jobs it already
        # took up (each gets one go), the stage timeouts it can cut short, and "nothing left".
        self._drain_end: float | None = None
        self._drain_seen: set[int] = set()
        self._cuts: set[asyncio.Timeout] = set()
        self._drained = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        self._renewer = asyncio.create_task(self._renew(), name="lease-renewer")

    def accepted(self, job_id: int, msg: WebhookMessage) -> None:
        """A notification was stored: keep its parsed form for the worker, and wake one.

        The store holds the body as received; handing the parsed message over in memory
        spares parsing it twice (a tenth of a millisecond for a 50-alert group). Bounded:
        past the limit the oldest are dropped and parsed again from the store, as after a
        restart.
        """
        self._parsed[job_id] = msg
        if len(self._parsed) > PARSED_LIMIT:
            self._parsed.popitem(last=False)
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Spend `grace` paging what is queued and running, then release the rest.

        Why not just let running jobs finish: a job acknowledged but not yet claimed would wait
        for a restart on this data directory, and a pod whose volume is not reused never pages
        it. So, while the intake refuses new work, the dispatcher keeps claiming (most urgent
        first) and every stage, running ones included, is cut to the grace left minus the
        delivery reserve; claiming stops once a job would get no time for evidence, and the
        reserve is left for delivering what is under way. Each job gets one go in the drain.
        A grace no longer than the delivery reserve leaves no time to page anything it would
        start: then running jobs get the grace to finish, as a plain stop.

        Deliveries waiting for a retry stay stored for the next start; sends under way, and
        the first sends of pages built in the drain, go out (one attempt each).
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + grace
        paged_before = self.outbox.pages_out
        self.outbox.stop()
        drain = self.running and not self._stopping and grace > self.pc.delivery_reserve
        if drain:
            self._drain_end = end
            self._drain_seen.update(self.active)
            self._drain_seen.update(self.outbox.inflight)
            for cut in list(self._cuts):
                cut.reschedule(self._cut_at())
            log.info(
                "shutting down: paging queued jobs within the grace period",
                extra={"grace_s": grace, "running": len(self.active)},
            )
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for tasks in ([t for t, _ in self.active.values()], None):
            tasks = tasks if tasks is not None else list(self.outbox.inflight.values())
            if not tasks:
                continue
            _done, pending = await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()))
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._renewer is not None:
            self._renewer.cancel()
        paged = self.outbox.pages_out - paged_before
        released = 0
        with contextlib.suppress(StoreError):
            released = await self.store.release(self.owner)
        if drain:
            log.info(
                "shutdown drain finished",
                extra={
                    "paged": paged,
                    "released": released,  # leases given back
                    "left": await self.store.backlog(),  # unfinished, for the next start
                    "drain_s": round(loop.time() - t0, 2),
                },
            )
        if released:
            log.info(
                "released unfinished jobs for the next start",
                extra={"jobs": released, "paged_during_grace": paged},
            )

    def _drain_left(self) -> float | None:
        if self._drain_end is None:
            return None
        return self._drain_end - asyncio.get_running_loop().time()

    def _cut_at(self) -> float | None:
        """When (loop time) a stage must give up so its page still goes out in the grace."""
        if self._drain_end is None:
            return None
        return self._drain_end - self.pc.delivery_reserve

    # -- scheduling ----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            started: int | None = None
            try:
                started = await self._fill()
            except StoreError as exc:
                log.error("cannot claim jobs", extra={"error": str(exc)})
                await asyncio.sleep(1)
            except Exception:
                log.exception("dispatcher error")
                await asyncio.sleep(1)
            if self._stopping:
                break
            if (
                self._drain_end is not None
                and started == 0
                and not self.active
                and not self.outbox.inflight
            ):
                self._drained.set()  # nothing queued, running or sending: stop need not wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _fill(self) -> int:
        """Claim jobs for the free slots and start them; returns how many were started."""
        free = self.slots - len(self.active)
        if free <= 0:
            return 0
        left = self._drain_left()
        if left is not None and left <= self.pc.delivery_reserve:
            return 0  # a job claimed now would get no time for evidence: the rest wait
        leased_at = asyncio.get_running_loop().time()
        jobs = await self.store.claim(self.owner, self.pc.lease, free, URGENT)
        normal_active = sum(1 for _, prio in self.active.values() if prio > URGENT)
        normal_free = min(free - len(jobs), self.slots - self.reserved - normal_active)
        if normal_free > 0:
            jobs += await self.store.claim(self.owner, self.pc.lease, normal_free, 1_000)
        started = 0
        for job in jobs:
            if self._stopping:
                break
            if job.id in self.active or job.id in self.outbox.inflight:
                continue  # its lease lapsed while it ran: it is still ours
            if self._drain_end is not None:
                if job.id in self._drain_seen:
                    continue  # one go per job in the drain (its deliveries wait for a retry)
                self._drain_seen.add(job.id)
            self._lease_until[job.id] = leased_at + self.pc.lease
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self.active[job.id] = (task, job.priority)
            task.add_done_callback(lambda _t, jid=job.id: self._finished(jid))
            started += 1
        self.metrics.backlog.set(await self.store.backlog())
        return started

    def _finished(self, job_id: int) -> None:
        self.active.pop(job_id, None)
        self._lease_until.pop(job_id, None)
        self._wake.set()

    # -- one job -------------------------------------------------------------------------------

    async def _renew(self) -> None:
        """Keep the leases of every running job alive, in one write per period."""
        every = max(0.5, self.pc.lease / 3)
        while True:
            await asyncio.sleep(every)
            held = [*self.active, *self.outbox.inflight]
            if held:
                at = asyncio.get_running_loop().time()
                with contextlib.suppress(StoreError):
                    await self.store.renew(held, self.owner, self.pc.lease)
                    for jid in held:
                        if jid in self._lease_until:
                            self._lease_until[jid] = at + self.pc.lease

    async def _run(self, job: Job) -> None:
        token = logs.job_id.set(job.id)
        try:
            await self._process(job)
        except asyncio.CancelledError:
            log.warning("job interrupted; it resumes from its last state")
            raise
        except (StoreError, _LeaseRunningOut) as exc:
            log.error(
                "store failure; the job is retried after its lease", extra={"error": str(exc)}
            )
        except Exception as exc:
            log.exception("job failed")
            with contextlib.suppress(StoreError):
                await self.store.set_state(
                    job.id, self.owner, JobState.FAILED, error=f"{type(exc).__name__}: {exc}"
                )
            self.metrics.child(self.metrics.jobs, "failed").inc()
        finally:
            logs.job_id.reset(token)

    async def _process(self, job: Job) -> None:
        msg = self._parsed.pop(job.id, None)
        if msg is None:
            try:
                msg = WebhookMessage.model_validate_json(job.body)
            except ValidationError as exc:  # stored bodies were validated: corruption
                error = str(exc)[:500]
                await self._retrying(
                    job,
                    "record the job as failed",
                    lambda: self.store.set_state(job.id, self.owner, JobState.FAILED, error=error),
                )
                self.metrics.child(self.metrics.jobs, "failed").inc()
                return
        if job.state == JobState.DELIVERING:
            record = await self._retrying(
                job, "read the stored page", lambda: self.store.get_page(job.id)
            )
            if record is not None:
                pending = [d for d in record.deliveries if d.state == "pending"]
                self.outbox.submit(job, Page.model_validate(record.doc), pending)
                return
        page = await self._build(job, msg)
        targets = [t.name for t in self.router.targets(page.labels)]
        record = PageRecord.model_construct(
            id=page.id,
            group_key=page.group_key,
            status=page.status,
            paged_at=page.paged_at.timestamp(),
            degraded=page.degraded,
            doc=page.model_dump_json(),
            # Every field given: model_construct would otherwise resolve the default
            # factory through inspect.signature, which for builtins is costly.
            resolved_at=None,
            resolved_by=None,
            deliveries=[],
        )
        # The page (and its evidence) stays in memory while the store refuses it: only this
        # write is repeated, never the gather and analyse that built it.
        await self._retrying(
            job,
            "save the page",
            lambda: self.store.save_page(record, targets, resolves=page.resolves),
        )
        self.outbox.submit(
            job,
            page,
            [
                DeliveryRecord.model_construct(
                    page_id=page.id,
                    notifier=t,
                    state="pending",
                    attempts=0,
                    last_error=None,
                    delivered_at=None,
                    next_try=None,
                    receipt=None,
                    kind="page",
                )
                for t in targets
            ],
        )

    async def _retrying(self, job: Job, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation, retrying it with backoff while the store fails.

        Why in the worker: a job given up on here is only taken up again when its lease
        expires (a minute by default), so a store that recovers after two seconds would
        still page a minute late, past the deadline. Retries end when the operation
        succeeds, when the lease would lapse (renewals fail with the store; past that the
        job may be another worker's, and `_LeaseRunningOut` leaves it to the lease), or when
        the service stops (the task is cancelled at the end of the grace period). The first
        failure of a job is logged; further ones go through a throttled line, since a full
        disk fails every waiting job at once.
        """
        loop = asyncio.get_running_loop()
        delay = STORE_RETRY_FIRST
        failures = 0
        since = loop.time()
        while True:
            try:
                result = await op()
            except StoreError as exc:
                failures += 1
                wait = delay * random.uniform(0.8, 1.0)
                lease_until = self._lease_until.get(job.id, since + self.pc.lease)
                margin = min(LEASE_MARGIN, self.pc.lease / 4)
                if loop.time() + wait > lease_until - margin:
                    raise _LeaseRunningOut(
                        f"cannot {what} for {loop.time() - since:.1f}s, until the lease: {exc}"
                    ) from exc
                extra = {"operation": what, "error": str(exc), "attempts": failures}
                if failures == 1:
                    log.error("store failure; the job waits in its worker and retries", extra=extra)
                else:
                    self._store_log.log(
                        logging.WARNING,
                        "store-retry",
                        "store still failing; jobs wait in their workers and retry",
                        **extra,
                        waited_s=round(loop.time() - since, 1),
                    )
                await asyncio.sleep(wait)
                delay = min(STORE_RETRY_MAX, delay * 2)
                continue
            if failures:
                log.info(
                    "store write succeeded again; the job continues",
                    extra={
                        "operation": what,
                        "attempts": failures + 1,
                        "waited_s": round(loop.time() - since, 2),
                    },
                )
            return result

    def _budget(self, job: Job, timeout: float) -> tuple[float, bool]:
        """A stage's budget, and whether the shutdown drain is what bounds it."""
        budget = min(timeout, job.deadline - time.time() - self.pc.delivery_reserve)
        left = self._drain_left()
        if left is not None and left - self.pc.delivery_reserve < budget:
            return left - self.pc.delivery_reserve, True
        return budget, False

    async def _stage(
        self,
        name: str,
        job: Job,
        timeout: float,
        make: Callable[[float], Awaitable[T]],
    ) -> tuple[T | None, str | None, bool]:
        """Run a stage within its budget; returns (result, reason, cut short by shutdown).

        The stage runs under a second timeout, unset until a drain begins: stop() moves it
        to the drain's cut-off, so stages already running when SIGTERM comes leave time for
        their pages too.
        """
        budget, by_drain = self._budget(job, timeout)
        if by_drain and budget <= 0:
            return None, f"{name}: skipped, shutting down", True
        loop = asyncio.get_running_loop()
        started = loop.time()
        cut = asyncio.timeout(self._cut_at())
        try:
            async with cut:
                self._cuts.add(cut)
                try:
                    result, why = await run_stage(name, lambda: make(budget), budget, self.metrics)
                finally:
                    self._cuts.discard(cut)
        except TimeoutError:
            if not cut.expired():
                raise
            self.metrics.child(self.metrics.stage_outcomes, name, "timeout").inc()
            return None, f"{name}: cut short at shutdown", True
        # Cut short by the drain: its budget was the binding one, and it used all of it.
        timed_out = why is not None and loop.time() - started >= budget - 0.01
        return result, why, by_drain and timed_out

    async def _build(self, job: Job, msg: WebhookMessage) -> Page:
        reasons: list[str] = []
        bundle: EvidenceBundle | None = None
        analysis: Analysis | None = None
        resolves: int | None = None
        timings: dict[str, float] = {}
        timeouts = self.pc.timeouts
        shutdown = False
        if msg.status == "resolved":
            prior = await self._retrying(
                job,
                "find the page it resolves",
                lambda: self.store.latest_firing_page(job.group_key, job.id),
            )
            if prior is not None:
                resolves = prior.id
            else:
                log.info("resolution with no firing page on record; paging it as is")
        elif job.state == JobState.ANALYSING and job.bundle:
            # Resumed after a restart: the evidence was already gathered and stored.
            bundle = EvidenceBundle.model_validate_json(job.bundle)
        else:
            t0 = time.perf_counter()
            gathered, why, cut = await self._stage(
                "gather",
                job,
                timeouts.gather,
                lambda budget: self.gatherer.gather(
                    # model_construct: `msg` is validated already, and pydantic would re-run its
                    # model validators on it as a field value.
                    GatherInput.model_construct(
                        job_id=job.id,
                        message=msg,
                        received_at=job.received_at,
                        budget_s=budget,
                    )
                ),
            )
            shutdown = shutdown or cut
            timings["gather"] = round((time.perf_counter() - t0) * 1000, 1)
            if why:
                reasons.append(why)
            if gathered is not None:
                bundle = gathered.bundle
                reasons.extend(gathered.reasons)
            if bundle is not None:  # keep it, so a restart does not gather twice
                try:
                    await self.store.set_state(
                        job.id, self.owner, JobState.ANALYSING, bundle=bundle.model_dump_json()
                    )
                except StoreError as exc:
                    # Only a checkpoint: the page must not wait for it. The bundle stays in
                    # memory, and saving the page (retried) stores it with the page.
                    self._store_log.log(
                        logging.WARNING,
                        "store-checkpoint",
                        "store failure keeping the evidence for a restart; the page goes ahead",
                        error=str(exc),
                    )
        if msg.status == "firing":
            t0 = time.perf_counter()
            analysed, why, cut = await self._stage(
                "analyse",
                job,
                timeouts.analyse,
                lambda budget: self.analyser.analyse(
                    AnalyseInput.model_construct(
                        message=msg,
                        bundle=bundle,
                        budget_s=budget,
                        on_late=lambda a, jid=job.id: self._late_analysis(jid, a),
                    )
                ),
            )
            shutdown = shutdown or cut
            timings["analyse"] = round((time.perf_counter() - t0) * 1000, 1)
            if why:
                reasons.append(why)
            if analysed is not None:
                analysis = analysed.analysis
                reasons.extend(analysed.reasons)
        if shutdown:
            reasons.append(SHUTDOWN_REASON)
        page = build_page(
            job.id,
            msg,
            received_at=job.received_at,
            deadline=job.deadline,
            reasons=reasons,
            resolves=resolves,
            evidence=bundle,
            analysis=analysis,
        )
        page.timings = timings
        return page

    async def _late_analysis(self, page_id: int, analysis: Analysis) -> None:
        """An analysis that finished after the page went out (a slow LLM): stored on the
        page, with `analysis.updated_at`, for readers and for notifiers that edit."""
        for _ in range(50):  # the page is saved right after the analyse stage returns
            record = await self.store.get_page(page_id)
            if record is not None:
                break
            await asyncio.sleep(0.1)
        else:
            log.warning("late analysis for a page that was never stored", extra={"page": page_id})
            return
        page = Page.model_validate(record.doc)
        page.analysis = analysis
        await self.store.update_page_doc(page_id, page.model_dump_json())
        log.info("analysis updated after paging", extra={"page_id": page_id})
        await self.outbox.request_update(page_id)
