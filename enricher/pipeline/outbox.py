"""The outbox: every delivery of a page is a stored row (attempts, last error, next try,
receipt) that is retried until the receiver accepts it or it fails for good.

Why apart from the job workers: a receiver that is slow or rate-limited (a Slack channel
takes about one message per second) must delay only its own deliveries. A job hands its page
to the outbox once the page and its delivery rows are stored and frees its worker slot, so
evidence for the next alerts is gathered meanwhile. The job's lease is renewed while its
deliveries run; a process that dies leaves pending rows that the next claim resumes, waiting
for each row's `next_try`.

At-least-once becomes effectively once through each notifier's own idempotency: PagerDuty's
dedup_key; for Slack the receipt (channel and message ts) stored the moment Slack accepted a
post, so a retry, an analysis update or the resolve edits that message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from enricher import logs
from enricher.config import PipelineConfig
from enricher.metrics import Metrics
from enricher.notify.base import DeliveryError, Notifier, SendContext
from enricher.notify.page import Page, page_from_record
from enricher.notify.routing import Router
from enricher.store.base import DeliveryRecord, Job, JobState, StoreError
from enricher.store.sqlite import SQLiteStore

log = logging.getLogger("enricher.pipeline")
# A receiver that says "later" (429 with Retry-After) is not failing: those answers do not
# count against `max_delivery_attempts`, only against this many in a row.
MAX_RATE_LIMITED = 200
# How long a resolve waits for the delivery of the page it resolves (so it edits that
# message rather than racing it).
PRIOR_WAIT_S = 120.0


class _Stopping(Exception):
    """The service is stopping while a delivery waits for its next try: it stays pending."""


class Outbox:
    def __init__(
        self,
        store: SQLiteStore,
        pc: PipelineConfig,
        notifiers: dict[str, Notifier],
        router: Router,
        metrics: Metrics,
        owner: str,
        on_done: Callable[[int], None],
    ) -> None:
        self.store = store
        self.pc = pc
        self.notifiers = notifiers
        self.router = router
        self.metrics = metrics
        self.owner = owner
        self.on_done = on_done
        self.inflight: dict[int, asyncio.Task[None]] = {}
        # Pages whose first deliveries are done and recorded with at least one sent: what the
        # pipeline reports as paged during a shutdown drain.
        self.pages_out = 0
        self._updates_wanted: set[int] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Deliveries waiting for a next try give up their wait (they stay pending, stored);
        those sending finish within the caller's grace."""
        self._stopping.set()

    async def _wait(self, delay: float) -> None:
        if self._stopping.is_set():
            raise _Stopping
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return
        raise _Stopping

    def submit(self, job: Job, page: Page, rows: list[DeliveryRecord]) -> None:
        """Deliver a stored page's pending rows, then finish its job."""
        task = asyncio.create_task(self._run(job, page, rows), name=f"deliver-{job.id}")
        self.inflight[job.id] = task
        task.add_done_callback(lambda t, jid=job.id: self._finished(jid, t))

    def _finished(self, job_id: int, task: asyncio.Task[None]) -> None:
        # A finished delivery may already have queued the page's update under the same job
        # id (`_run` -> `_requeue` -> `submit`): leave that entry, or its lease would no
        # longer be renewed and another worker would send the update a second time.
        if self.inflight.get(job_id) is task:
            del self.inflight[job_id]
        self.on_done(job_id)

    async def request_update(self, page_id: int) -> None:
        """The page's analysis changed after it went out: send it again to the notifiers that
        edit what they sent. While its first deliveries still run, the update follows them."""
        if page_id in self.inflight or not await self._requeue(page_id):
            # still being delivered (or about to be): the update follows when that finishes
            self._updates_wanted.add(page_id)

    async def _requeue(self, page_id: int) -> bool:
        """False when the job is not final yet; True when requeued or nothing to update."""
        rows = await self.store.deliveries(page_id)
        names = [
            r.notifier
            for r in rows
            # an editing notifier saves a receipt with every accepted send: sent rows have one
            if self._edits(r.notifier) and r.state in ("sent", "pending")
        ]
        if not names:
            return True
        if not await self.store.requeue_update(page_id, self.owner, names, self.pc.lease):
            return False
        record = await self.store.get_page(page_id)
        if record is None:
            return True
        # With the record's later facts: an update after the resolve must keep it resolved.
        page = page_from_record(record)
        job = Job.model_construct(
            id=page_id,
            received_at=page.received_at.timestamp(),
            deadline=page.deadline.timestamp(),
            state=JobState.DELIVERING,
        )
        self.submit(job, page, [d for d in record.deliveries if d.notifier in names])
        return True

    def _edits(self, target_name: str) -> bool:
        target = self.router.target(target_name)
        notifier = self.notifiers.get(target.notifier) if target else None
        return bool(notifier is not None and getattr(notifier, "edits", False))

    # -- one page ------------------------------------------------------------------------------

    async def _run(self, job: Job, page: Page, rows: list[DeliveryRecord]) -> None:
        token = logs.job_id.set(job.id)
        try:
            await self._deliver(job, page, rows)
        except asyncio.CancelledError:
            log.warning("delivery interrupted; it resumes from its stored state")
            raise
        except _Stopping:
            log.info("stopping: deliveries left pending for the next start")
            return
        except StoreError as exc:
            log.error("store failure while delivering; retried", extra={"error": str(exc)})
        except Exception:
            log.exception("delivery failed unexpectedly")
        finally:
            logs.job_id.reset(token)
        if job.id in self._updates_wanted:
            self._updates_wanted.discard(job.id)
            await self._requeue(job.id)

    async def _deliver(self, job: Job, page: Page, rows: list[DeliveryRecord]) -> None:
        t0 = time.perf_counter()
        first = any(r.kind == "page" for r in rows)
        results = await asyncio.gather(*(self._deliver_one(page, r) for r in rows))
        self.metrics.child(self.metrics.stage_seconds, "deliver").observe(time.perf_counter() - t0)
        now = time.time()
        if first:
            self.metrics.child(self.metrics.pages, page.status, str(page.degraded).lower()).inc()
            self.metrics.page_latency.observe(max(0.0, now - job.received_at))
            if now > job.deadline:
                self.metrics.past_deadline.inc()
        sent = [r.notifier for r, ok in zip(rows, results, strict=True) if ok]
        failed = [r.notifier for r, ok in zip(rows, results, strict=True) if not ok]
        state = JobState.FAILED if failed else JobState.DONE
        error = f"delivery failed: {', '.join(failed)}" if failed else None
        await self.store.finish(job.id, self.owner, state, sent, error, time.time())
        self.metrics.child(self.metrics.jobs, state.value).inc()
        if first and sent:
            self.pages_out += 1

    async def _context(self, page: Page, row: DeliveryRecord) -> SendContext | None:
        target = self.router.target(row.notifier)
        if target is None:
            return None
        ctx = SendContext(
            target=target,
            receipt=dict(row.receipt or {}),
            update=row.kind == "update",
        )

        async def save(receipt: dict[str, str]) -> None:
            ctx.receipt = dict(receipt)
            await self.store.save_receipt(page.id, row.notifier, receipt)

        ctx.save = save
        if page.resolves is not None:
            prior = self.inflight.get(page.resolves)
            if prior is not None:  # let the firing page land first, so the resolve edits it
                await asyncio.wait([prior], timeout=PRIOR_WAIT_S)
            record = await self.store.get_page(page.resolves)
            if record is not None:
                ctx.prior_page = Page.model_validate(record.doc)
                mine = next((d for d in record.deliveries if d.notifier == row.notifier), None)
                ctx.prior_receipt = mine.receipt if mine is not None else None
        return ctx

    async def _deliver_one(self, page: Page, row: DeliveryRecord) -> bool:
        ctx = await self._context(page, row)
        notifier = self.notifiers.get(ctx.target.notifier) if ctx else None
        if ctx is None or notifier is None:
            error = f"notifier {row.notifier!r} is not configured any more"
            await self.store.record_delivery(page.id, row.notifier, "failed", error, time.time())
            log.error("delivery dropped", extra={"notifier": row.notifier, "error": error})
            return False
        if row.next_try is not None and row.next_try > time.time():  # resumed: keep the backoff
            await self._wait(row.next_try - time.time())
        failures = row.attempts
        limited = 0
        # A paced notifier (Slack) waits in its own per-channel queue and bounds each request
        # itself; the others get `timeouts.deliver` per attempt.
        bound = None if getattr(notifier, "paced", False) else self.pc.timeouts.deliver
        while True:
            retry_after: float | None = None
            try:
                async with asyncio.timeout(bound):
                    await notifier.send(page, ctx)
            except DeliveryError as exc:
                error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after
            except TimeoutError:
                error, retryable = f"no answer within {self.pc.timeouts.deliver:.1f}s", True
            except Exception as exc:  # a notifier bug must not kill the job
                log.exception("notifier error", extra={"notifier": row.notifier})
                error, retryable = f"{type(exc).__name__}: {exc}", False
            else:  # recorded as sent together with the job's final state
                self.metrics.child(self.metrics.deliveries, notifier.name, "sent").inc()
                return True
            if retry_after is not None and retryable:
                limited += 1
            else:
                failures += 1
                limited = 0
            final = not retryable or failures >= self.pc.max_delivery_attempts
            final = final or limited >= MAX_RATE_LIMITED
            if retry_after is not None:
                delay = retry_after
            else:
                delay = min(30.0, 0.5 * 2 ** max(0, failures - 1)) * random.uniform(0.9, 1.1)
            now = time.time()
            await self.store.record_delivery(
                page.id,
                row.notifier,
                "failed" if final else "pending",
                error[:500],
                now,
                None if final else now + delay,
            )
            self.metrics.child(
                self.metrics.deliveries, notifier.name, "failed" if final else "retry"
            ).inc()
            (log.info if retry_after is not None and not final else log.warning)(
                "delivery failed",
                extra={
                    "notifier": row.notifier,
                    "attempt": failures + limited,
                    "error": error[:300],
                    "final": final,
                },
            )
            if final:
                return False
            await self._wait(delay)
