"""Notifiers carry a finished page to people. Each one implements `Notifier`."""

from __future__ import annotations

from enricher.config import NotifiersConfig
from enricher.notify.base import DeliveryError, Notifier
from enricher.notify.log import LogNotifier
from enricher.notify.page import Page, build_page
from enricher.notify.pagerduty import PagerDutyNotifier
from enricher.notify.slack import SlackWebhookNotifier
from enricher.notify.webhook import WebhookNotifier

__all__ = ["DeliveryError", "Notifier", "Page", "build_notifiers", "build_page"]


def build_notifiers(config: NotifiersConfig) -> list[Notifier]:
    out: list[Notifier] = []
    if config.log.enabled:
        out.append(LogNotifier())
    if config.webhook is not None:
        out.append(WebhookNotifier(config.webhook))
    if config.pagerduty is not None:
        out.append(PagerDutyNotifier(config.pagerduty))
    if config.slack is not None:
        out.append(SlackWebhookNotifier(config.slack))
    return out
