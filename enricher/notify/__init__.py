"""Notifiers carry a finished page to people. Each one implements `Notifier`."""

from __future__ import annotations

from enricher.config import Config
from enricher.notify.alertmanager import AlertmanagerForwarder
from enricher.notify.base import DeliveryError, Notifier, SendContext
from enricher.notify.log import LogNotifier
from enricher.notify.page import Page, build_page
from enricher.notify.pagerduty import PagerDutyNotifier
from enricher.notify.slack import SlackWebhookNotifier
from enricher.notify.slack_bot import SlackBotNotifier
from enricher.notify.webhook import WebhookNotifier

__all__ = [
    "DeliveryError",
    "Notifier",
    "Page",
    "SendContext",
    "build_notifiers",
    "build_page",
]


def build_notifiers(config: Config) -> list[Notifier]:
    """One notifier per configured integration, in `NotifiersConfig.names()` order."""
    nc = config.notifiers
    public = str(config.public_url).rstrip("/") if config.public_url else None
    out: list[Notifier] = []
    if nc.log.enabled:
        out.append(LogNotifier())
    if nc.webhook is not None:
        out.append(WebhookNotifier(nc.webhook))
    if nc.pagerduty is not None:
        out.append(PagerDutyNotifier(nc.pagerduty, public))
    if nc.slack is not None:
        out.append((SlackBotNotifier if nc.slack.bot else SlackWebhookNotifier)(nc.slack, public))
    if nc.alertmanager is not None:
        out.append(AlertmanagerForwarder(nc.alertmanager, public))
    return out
