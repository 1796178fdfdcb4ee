"""The one interface every notifier implements, and the error that says whether to retry."""

from __future__ import annotations

from typing import Protocol

from enricher.notify.page import Page


class DeliveryError(Exception):
    """A failed send; `retryable` and `retry_after` (seconds, from the receiver) steer retries."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Notifier(Protocol):
    name: str

    async def send(self, page: Page) -> None:
        """Deliver the page or raise DeliveryError."""
        ...

    async def close(self) -> None: ...
