"""The `log` notifier: one structured JSON line per page, for people without Slack yet."""

from __future__ import annotations

import logging

from enricher.notify.base import SendContext
from enricher.notify.page import Page, evidence_summary

log = logging.getLogger("enricher.page")


class LogNotifier:
    name = "log"
    edits = False

    async def send(self, page: Page, ctx: SendContext) -> None:
        log.info(
            page.title,
            extra={
                "page_id": page.id,
                "status": page.status,
                "severity": page.severity,
                "labels": page.labels,
                "alert_count": page.alert_count,
                "degraded": page.degraded,
                "reasons": page.reasons,
                "runbook_url": page.runbook_url,
                "resolves": page.resolves,
                **evidence_summary(page),
            },
        )

    async def close(self) -> None:
        return None
