"""One gather's state: the evidence so far, the steps still waiting, and how a failed step
becomes a `missing` entry instead of an exception."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from enricher.bundle.build import GatheredEvidence
from enricher.bundle.model import (
    Missing,
    Source,
)
from enricher.sources.http import BackendError

log = logging.getLogger("enricher.gather")
T = TypeVar("T")


_RESERVE_MIN = 0.02
_RESERVE_FRACTION = 0.1
_RESERVE_MAX = 0.3


NOT_CONFIGURED = "not configured"


def _reason(exc: BackendError) -> str:
    return {
        "not_configured": NOT_CONFIGURED,
        "timeout": f"timed out ({exc.detail})",
        "unavailable": f"unreachable ({exc.detail})",
        "bad_request": f"rejected the query ({exc.detail})",
        "bad_response": f"unexpected answer ({exc.detail})",
        "http_error": f"failed ({exc.detail})",
    }.get(exc.kind, exc.detail)[:400]


class _Run:
    """State of one gather: the evidence so far and the steps still waiting for an answer."""

    def __init__(self, ev: GatheredEvidence, deadline: float) -> None:
        self.ev = ev
        self.deadline = deadline
        self.pending: dict[int, tuple[str, Source, str]] = {}
        self._n = 0

    def miss(self, what: str, source: Source, reason: str, query: str = "") -> None:
        self.ev.missing.append(Missing(what=what, source=source, reason=reason, query=query))

    async def step(
        self, what: str, source: Source, coro: Awaitable[T], query: str = ""
    ) -> T | None:
        """Await one backend step; failures become `missing` entries, never exceptions."""
        self._n += 1
        key = self._n
        self.pending[key] = (what, source, query)
        try:
            result = await coro
        except BackendError as exc:
            self.pending.pop(key, None)
            self.miss(what, source, _reason(exc), query)
            return None
        except asyncio.CancelledError:
            raise  # stays pending: reported as cut off by the budget
        except Exception as exc:  # a bug must cost evidence, not the page
            self.pending.pop(key, None)
            log.exception("gather step failed", extra={"step": what})
            self.miss(what, source, f"internal error: {type(exc).__name__}: {exc}"[:300], query)
            return None
        self.pending.pop(key, None)
        return result
