"""The `webhook` notifier: the page as JSON to a configured URL (chat bridges, ticketing)."""

from __future__ import annotations

from enricher.config import WebhookNotifierConfig
from enricher.notify.base import SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page


class WebhookNotifier:
    name = "webhook"
    edits = False

    def __init__(self, config: WebhookNotifierConfig) -> None:
        self.config = config
        self.http = Poster(config.timeout)

    async def send(self, page: Page, ctx: SendContext) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"page-{page.id}"}
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        answer = await self.http.post(str(self.config.url), page.model_dump_json(), headers)
        if answer.status >= 300:
            raise answer.error()

    async def close(self) -> None:
        await self.http.close()
