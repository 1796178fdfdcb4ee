"""What the service keeps durably, and the interface every store backend implements.

The embedded backend is SQLite; a networked one (Redis) implements the same `Store`. The
pipeline never sees SQL: it accepts notifications, claims jobs under a lease, moves them
through their states, records pages and delivery attempts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field


class JobState(StrEnum):
    RECEIVED = "received"
    GATHERING = "gathering"
    ANALYSING = "analysing"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"


FINAL_STATES = (JobState.DONE, JobState.FAILED)


class StoreError(Exception):
    """The store could not commit; the caller must not acknowledge the work as stored."""


class AcceptResult(BaseModel):
    id: int
    duplicate: bool
    duplicates: int = 0


class NewNotification(BaseModel):
    """What the intake hands to the store; `body` is the request exactly as received."""

    idem_key: str
    group_key: str
    status: str
    severity: str
    priority: int
    alert_count: int
    received_at: float
    deadline: float
    body: bytes


class Job(BaseModel):
    id: int
    state: JobState
    priority: int
    severity: str
    status: str
    group_key: str
    received_at: float
    deadline: float
    attempts: int
    body: bytes
    bundle: str | None = None


class DeliveryRecord(BaseModel):
    page_id: int
    notifier: str
    state: str = "pending"  # pending | sent | failed
    attempts: int = 0
    last_error: str | None = None
    delivered_at: float | None = None
    # The outbox: when the next attempt is due, what the receiver gave back to edit later
    # (a Slack channel and message ts), and whether this is the first send or an update.
    next_try: float | None = None
    receipt: dict[str, str] | None = None
    kind: str = "page"  # page | update


class PageRecord(BaseModel):
    """The stored page: `doc` is the rendered Page model (its JSON text when saving)."""

    id: int
    group_key: str
    status: str
    paged_at: float
    degraded: bool
    doc: dict[str, Any] | str
    resolved_at: float | None = None
    resolved_by: int | None = None
    deliveries: list[DeliveryRecord] = Field(default_factory=list)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def accept(self, n: NewNotification) -> AcceptResult:
        """Commit a notification and its job durably, or count a duplicate of one."""
        ...

    async def backlog(self) -> int:
        """Jobs not yet done or failed."""
        ...

    async def claim(self, owner: str, lease_s: float, limit: int, max_priority: int) -> list[Job]:
        """Lease up to `limit` runnable jobs, most urgent first, oldest first."""
        ...

    async def renew(self, job_ids: list[int], owner: str, lease_s: float) -> int:
        """Extend the leases `owner` holds on these jobs; returns how many it still holds."""
        ...

    async def release(self, owner: str) -> int:
        """Give back every lease `owner` holds, so another worker takes the jobs up now."""
        ...

    async def set_state(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        *,
        bundle: str | None = None,
        error: str | None = None,
    ) -> None: ...

    async def save_page(
        self, page: PageRecord, notifiers: list[str], resolves: int | None = None
    ) -> None:
        """Record the page, one pending delivery per notifier, the job's move to delivering,
        and the resolution of an earlier page, atomically (idempotent per page id)."""
        ...

    async def update_page_doc(self, page_id: int, doc: str) -> bool:
        """Replace a stored page's document (an analysis that arrived after the page went
        out); False when there is no such page."""
        ...

    async def finish(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        sent: list[str],
        error: str | None,
        at: float,
    ) -> None:
        """Mark deliveries sent and the job final, atomically."""
        ...

    async def pending_deliveries(self, page_id: int) -> list[str]: ...

    async def get_page(self, page_id: int) -> PageRecord | None: ...

    async def list_pages(self, limit: int, before: int | None = None) -> list[PageRecord]: ...

    async def latest_firing_page(self, group_key: str, before_id: int) -> PageRecord | None: ...

    async def record_delivery(
        self,
        page_id: int,
        notifier: str,
        state: str,
        error: str | None,
        at: float,
        next_try: float | None = None,
    ) -> None: ...

    async def save_receipt(self, page_id: int, notifier: str, receipt: dict[str, str]) -> None:
        """Keep what a receiver answered (a message id) the moment it accepted a send."""
        ...

    async def deliveries(self, page_id: int) -> list[DeliveryRecord]: ...

    async def requeue_update(
        self, job_id: int, owner: str, notifiers: list[str], lease_s: float
    ) -> bool:
        """Make a final job's deliveries to `notifiers` pending updates, leased to `owner`."""
        ...

    async def check_writable(self) -> None:
        """Raise StoreError unless a write can be committed now."""
        ...
