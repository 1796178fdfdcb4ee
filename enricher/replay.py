"""`enricher replay FILE`: run analysis and delivery again from a stored evidence bundle.

Why: the bundle is the whole input of the root-cause and paging stages, so replaying it
reproduces a page without any backend. That is how a page is debugged after the fact, how a
new analyser is compared with the old one, and how a notifier is tried on real evidence.

FILE is either a page as `GET /api/v1/pages/<id>` returns it (its `evidence` is replayed and
its alerts are kept) or a bare bundle (`EvidenceBundle` JSON), from which the alert is
rebuilt. The new page is printed as JSON on stdout and delivered through the notifiers of the
configuration (by default the log notifier, on stderr); `--no-deliver` only prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from enricher import logs
from enricher.analysis.stage import RootCauseAnalyser
from enricher.bundle.model import EvidenceBundle
from enricher.config import Config, ConfigError, load_config
from enricher.intake.webhook import WebhookMessage
from enricher.metrics import Metrics
from enricher.notify import build_notifiers
from enricher.notify.base import SendContext
from enricher.notify.page import Page, build_page
from enricher.notify.routing import Target
from enricher.pipeline.stages import AnalyseInput, run_stage


class ReplayError(Exception):
    pass


def _message_from_bundle(bundle: EvidenceBundle) -> WebhookMessage:
    a = bundle.alert
    annotations = {"summary": a.summary, "description": a.description}
    for link in bundle.links:
        if link.kind in ("runbook", "dashboard"):
            annotations[f"{link.kind}_url"] = link.url
    labels = {"alertname": a.alertname, **a.labels}
    if a.severity:
        labels.setdefault("severity", a.severity)
    return WebhookMessage.model_validate(
        {
            "version": "4",
            "groupKey": a.group_key or f"replay:{a.alertname}",
            "status": a.status,
            "receiver": "replay",
            "commonLabels": labels,
            "commonAnnotations": {k: v for k, v in annotations.items() if v},
            "alerts": [
                {
                    "status": a.status,
                    "labels": labels,
                    "annotations": {k: v for k, v in annotations.items() if v},
                    "startsAt": a.starts_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "fingerprint": a.fingerprint,
                }
            ],
        }
    )


def _message_from_page(page: Page) -> WebhookMessage:
    return WebhookMessage.model_validate(
        {
            "version": "4",
            "groupKey": page.group_key,
            "status": page.status,
            "receiver": page.receiver,
            "commonLabels": page.labels,
            "commonAnnotations": page.annotations,
            "externalURL": page.external_url,
            "alerts": [
                {
                    "status": al.status,
                    "labels": al.labels,
                    "annotations": al.annotations,
                    "startsAt": al.starts_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "generatorURL": al.generator_url,
                    "fingerprint": al.fingerprint,
                }
                for al in page.alerts
            ],
        }
    )


def load(path: Path) -> tuple[WebhookMessage, EvidenceBundle, int]:
    """Read a stored page or bundle; returns the alert, the bundle and the page id (0 if none)."""
    try:
        doc: Any = json.loads(path.read_bytes())
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReplayError(f"{path}: expected a page or an evidence bundle (a JSON object)")
    try:
        if "evidence" in doc:
            page = Page.model_validate(doc)
            if page.evidence is None:
                raise ReplayError(f"{path}: this page has no evidence bundle to replay")
            return _message_from_page(page), page.evidence, page.id
        bundle = EvidenceBundle.model_validate(doc)
        return _message_from_bundle(bundle), bundle, 0
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ReplayError(f"{path}: not a page or bundle: {where}: {err['msg']}") from None


async def replay(config: Config, path: Path, deliver: bool) -> Page:
    msg, bundle, page_id = load(path)
    metrics = Metrics()
    analysed, why = await run_stage(
        "analyse",
        lambda: RootCauseAnalyser(metrics=metrics).analyse(
            AnalyseInput(message=msg, bundle=bundle, budget_s=config.pipeline.timeouts.analyse)
        ),
        config.pipeline.timeouts.analyse,
        metrics,
    )
    now = time.time()
    page = build_page(
        page_id,
        msg,
        received_at=now,
        deadline=now + config.pipeline.deadline_for(msg.severity()),
        reasons=[why] if why else [],
        evidence=bundle,
        analysis=analysed.analysis if analysed else None,
    )
    if deliver:
        for notifier in build_notifiers(config):
            try:
                await notifier.send(
                    page, SendContext(target=Target(name=notifier.name, notifier=notifier.name))
                )
            finally:
                await notifier.close()
    return page


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="enricher replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path, help="a stored page or evidence bundle (JSON)")
    ap.add_argument("--config", help="configuration whose notifiers receive the page")
    ap.add_argument("--no-deliver", action="store_true", help="print the page, send nothing")
    args = ap.parse_args(list(argv))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"enricher replay: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    try:
        page = asyncio.run(replay(config, args.file, deliver=not args.no_deliver))
    except ReplayError as exc:
        print(f"enricher replay: {exc}", file=sys.stderr)
        return 2
    print(page.model_dump_json(indent=2))
    return 0
