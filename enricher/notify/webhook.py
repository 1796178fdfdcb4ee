"""The `webhook` notifier: the page as JSON to a configured URL (chat bridges, ticketing)."""

from __future__ import annotations

from enricher.config import WebhookNotifierConfig
from enricher.notify.base import SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page


def idempotency_key(page: Page) -> str:
    """The notification's identity, not our row id: two replicas, two data directories or a
    wiped one number pages from 1 each, and a receiver deduplicating on `page-1` would drop
    real pages. The key already separates firing from resolved; the update of an analysis is
    a different send of the same notification and is not sent here (this notifier does not
    edit)."""
    if page.notification_key:
        return f"enricher-{page.notification_key[:40]}"
    return f"enricher-page-{page.id}"  # a page stored before notification keys existed


class WebhookNotifier:
    name = "webhook"
    edits = False

    def __init__(self, config: WebhookNotifierConfig) -> None:
        self.config = config
        self.http = Poster(config.timeout)

    async def send(self, page: Page, ctx: SendContext) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(page)}
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        answer = await self.http.post(str(self.config.url), page.model_dump_json(), headers)
        if answer.status >= 300:
            raise answer.error()

    async def close(self) -> None:
        await self.http.close()
