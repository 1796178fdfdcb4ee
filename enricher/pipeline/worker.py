"""Workers that take stored jobs through gather -> analyse -> deliver under a lease.

Scheduling: jobs are claimed most urgent severity first, oldest first, and a quarter of the
worker slots are kept for the most urgent severity, so a storm of warnings can fill the rest
but never delays a critical page. Every job has a page deadline; gather and analyse get what
is left of it (minus a reserve for delivery), and whatever is ready then goes out, marked
degraded with the reasons. Leases are renewed while a job runs; a job whose worker died is
claimed again when its lease expires, and on start-up every unfinished job resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict

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
URGENT = 0
PARSED_LIMIT = 1024  # workers take a few dozen at a time; more only burdens the GC


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
        self._wake = asyncio.Event()
        self._parsed: OrderedDict[int, WebhookMessage] = OrderedDict()
        self._stopping = False
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
        """Stop claiming, let running jobs finish within `grace`, release the rest."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._renewer is not None:
            self._renewer.cancel()
        # Deliveries waiting for a retry stay stored; sends under way, and the pages of jobs
        # that finish within the grace period, go out (one attempt each).
        self.outbox.stop()
        end = time.monotonic() + grace
        for tasks in ([t for t, _ in self.active.values()], None):
            tasks = tasks if tasks is not None else list(self.outbox.inflight.values())
            if not tasks:
                continue
            _done, pending = await asyncio.wait(tasks, timeout=max(0.0, end - time.monotonic()))
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        with contextlib.suppress(StoreError):
            released = await self.store.release(self.owner)
            if released:
                log.info("released unfinished jobs for the next start", extra={"jobs": released})

    # -- scheduling ----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._fill()
            except StoreError as exc:
                log.error("cannot claim jobs", extra={"error": str(exc)})
                await asyncio.sleep(1)
            except Exception:
                log.exception("dispatcher error")
                await asyncio.sleep(1)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _fill(self) -> None:
        free = self.slots - len(self.active)
        if free <= 0:
            return
        jobs = await self.store.claim(self.owner, self.pc.lease, free, URGENT)
        normal_active = sum(1 for _, prio in self.active.values() if prio > URGENT)
        normal_free = min(free - len(jobs), self.slots - self.reserved - normal_active)
        if normal_free > 0:
            jobs += await self.store.claim(self.owner, self.pc.lease, normal_free, 1_000)
        for job in jobs:
            if self._stopping:
                break
            if job.id in self.active or job.id in self.outbox.inflight:
                continue  # its lease lapsed while it ran: it is still ours
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self.active[job.id] = (task, job.priority)
            task.add_done_callback(lambda _t, jid=job.id: self._finished(jid))
        self.metrics.backlog.set(await self.store.backlog())

    def _finished(self, job_id: int) -> None:
        self.active.pop(job_id, None)
        self._wake.set()

    # -- one job -------------------------------------------------------------------------------

    async def _renew(self) -> None:
        """Keep the leases of every running job alive, in one write per period."""
        every = max(0.5, self.pc.lease / 3)
        while True:
            await asyncio.sleep(every)
            held = [*self.active, *self.outbox.inflight]
            if held:
                with contextlib.suppress(StoreError):
                    await self.store.renew(held, self.owner, self.pc.lease)

    async def _run(self, job: Job) -> None:
        token = logs.job_id.set(job.id)
        try:
            await self._process(job)
        except asyncio.CancelledError:
            log.warning("job interrupted; it resumes from its last state")
            raise
        except StoreError as exc:
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
                await self.store.set_state(
                    job.id, self.owner, JobState.FAILED, error=str(exc)[:500]
                )
                self.metrics.child(self.metrics.jobs, "failed").inc()
                return
        if job.state == JobState.DELIVERING:
            record = await self.store.get_page(job.id)
            if record is not None:
                pending = [d for d in record.deliveries if d.state == "pending"]
                self.outbox.submit(job, Page.model_validate(record.doc), pending)
                return
        page = await self._build(job, msg)
        targets = [t.name for t in self.router.targets(page.labels)]
        await self.store.save_page(
            PageRecord.model_construct(
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
            ),
            targets,
            resolves=page.resolves,
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

    async def _build(self, job: Job, msg: WebhookMessage) -> Page:
        reasons: list[str] = []
        bundle: EvidenceBundle | None = None
        analysis: Analysis | None = None
        resolves: int | None = None
        timings: dict[str, float] = {}
        timeouts = self.pc.timeouts
        if msg.status == "resolved":
            prior = await self.store.latest_firing_page(job.group_key, job.id)
            if prior is not None:
                resolves = prior.id
            else:
                log.info("resolution with no firing page on record; paging it as is")
        elif job.state == JobState.ANALYSING and job.bundle:
            # Resumed after a restart: the evidence was already gathered and stored.
            bundle = EvidenceBundle.model_validate_json(job.bundle)
        else:
            budget = job.deadline - time.time() - self.pc.delivery_reserve
            t0 = time.perf_counter()
            gathered, why = await run_stage(
                "gather",
                lambda: self.gatherer.gather(
                    # model_construct: `msg` is validated already, and pydantic would re-run its
                    # model validators on it as a field value.
                    GatherInput.model_construct(
                        job_id=job.id,
                        message=msg,
                        received_at=job.received_at,
                        budget_s=min(timeouts.gather, budget),
                    )
                ),
                min(timeouts.gather, budget),
                self.metrics,
            )
            timings["gather"] = round((time.perf_counter() - t0) * 1000, 1)
            if why:
                reasons.append(why)
            if gathered is not None:
                bundle = gathered.bundle
                reasons.extend(gathered.reasons)
            if bundle is not None:  # keep it, so a restart does not gather twice
                await self.store.set_state(
                    job.id, self.owner, JobState.ANALYSING, bundle=bundle.model_dump_json()
                )
        if msg.status == "firing":
            budget = job.deadline - time.time() - self.pc.delivery_reserve
            t0 = time.perf_counter()
            analysed, why = await run_stage(
                "analyse",
                lambda: self.analyser.analyse(
                    AnalyseInput.model_construct(
                        message=msg,
                        bundle=bundle,
                        budget_s=min(timeouts.analyse, budget),
                        on_late=lambda a, jid=job.id: self._late_analysis(jid, a),
                    )
                ),
                min(timeouts.analyse, budget),
                self.metrics,
            )
            timings["analyse"] = round((time.perf_counter() - t0) * 1000, 1)
            if why:
                reasons.append(why)
            if analysed is not None:
                analysis = analysed.analysis
                reasons.extend(analysed.reasons)
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
