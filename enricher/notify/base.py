"""The one interface every notifier implements, and the error that says whether to retry.

Why a `SendContext`: delivery is at-least-once (a durable outbox retries until the receiver
accepts), and each notifier makes that effectively once with its own idempotency. A notifier
that posts something it may later edit (a Slack message) saves a receipt (`ctx.save`) the
moment the receiver accepts, so a retry, an analysis update or the resolve edits that message
instead of posting another; a resolve also sees the receipt of the page it resolves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from enricher.notify.page import Page
from enricher.notify.routing import Target


class DeliveryError(Exception):
    """A failed send; `retryable` and `retry_after` (seconds, from the receiver) steer retries."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


async def _discard(_receipt: dict[str, str]) -> None:
    return None


@dataclass
class SendContext:
    target: Target
    # This delivery's receipt from earlier attempts (or from the first send, on an update).
    receipt: dict[str, str] = field(default_factory=dict)
    # The receipt and page of the firing page that this (resolved) page resolves.
    prior_receipt: dict[str, str] | None = None
    prior_page: Page | None = None
    # True when the page was sent before and is re-sent because its analysis changed.
    update: bool = False
    # Persist the receipt now (before any further request), so no retry repeats a post.
    save: Callable[[dict[str, str]], Awaitable[None]] = _discard


class Notifier(Protocol):
    name: str
    # True for notifiers that can edit what they sent (Slack bot): they get analysis updates.
    edits: bool

    async def send(self, page: Page, ctx: SendContext) -> None:
        """Deliver the page or raise DeliveryError."""
        ...

    async def close(self) -> None: ...
