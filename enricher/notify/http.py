"""The HTTP part every notifier shares: one lazily created session, one POST, and one
mapping of answers onto `DeliveryError` (429 and 5xx retryable with `Retry-After`, anything
else permanent). The pipeline's retry loop is the only place that retries."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from enricher.notify.base import DeliveryError


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    retry_after: float | None

    def error(self) -> DeliveryError:
        return DeliveryError(
            f"HTTP {self.status}: {self.text[:200]}",
            retryable=self.status == 429 or self.status >= 500,
            retry_after=self.retry_after,
        )


class Poster:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self,
        url: str,
        data: str | bytes,
        headers: dict[str, str],
        *,
        secret_url: bool = False,
        read_limit: int | None = 500,
    ) -> Answer:
        """POST and read the answer; connection failures are retryable `DeliveryError`s
        (without the URL in the message when the URL is itself the credential). The answer's
        text is cut to `read_limit` characters: enough for an error message, unless the caller
        parses the body (Slack's Web API answers in JSON) and passes None."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, data=data, headers=headers) as resp:
                text = await resp.text(errors="replace")
                if read_limit is not None:
                    text = text[:read_limit]
                return Answer(
                    resp.status, text, retry_after_seconds(resp.headers.get("Retry-After"))
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = type(exc).__name__ if secret_url else f"{type(exc).__name__}: {exc}"
            raise DeliveryError(detail) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
