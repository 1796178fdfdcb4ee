"""The `webhook` notifier: the page as JSON to a configured URL (chat bridges, ticketing)."""

from __future__ import annotations

import aiohttp

from enricher.config import WebhookNotifierConfig
from enricher.notify.base import DeliveryError
from enricher.notify.page import Page


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class WebhookNotifier:
    name = "webhook"

    def __init__(self, config: WebhookNotifierConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def send(self, page: Page) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout)
            )
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"page-{page.id}"}
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        try:
            async with self._session.post(
                str(self.config.url), data=page.model_dump_json(), headers=headers
            ) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:200]
                retryable = resp.status == 429 or resp.status >= 500
                raise DeliveryError(
                    f"HTTP {resp.status}: {text}",
                    retryable=retryable,
                    retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
