"""The pipeline's gather stage on top of the evidence `Gatherer`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TypeVar

from enricher.evidence.gather import NOT_CONFIGURED, Gatherer
from enricher.pipeline.stages import GatherInput, GatherOutput

log = logging.getLogger("enricher.gather")
T = TypeVar("T")


class StageGatherer:
    """Adapter to `enricher.pipeline.stages.Gatherer` (GatherInput -> GatherOutput).

    The stage runner cancels at exactly its timeout, so the bundle is asked to be ready a
    little earlier (5 %, at least 50 ms) to be sure it is not lost to that race.
    """

    def __init__(self, gatherer: Gatherer) -> None:
        self.gatherer = gatherer

    async def gather(self, inp: GatherInput) -> GatherOutput:
        budget = max(0.0, inp.budget_s - max(0.05, 0.05 * inp.budget_s))
        received = datetime.fromtimestamp(inp.received_at, UTC)
        bundle = await self.gatherer.gather(inp.message, received, budget)
        # A backend left unconfigured is the operator's choice, not a degraded page.
        reasons = [
            f"{m.source}: {m.what}: {m.reason}"
            for m in bundle.missing
            if m.reason != NOT_CONFIGURED
        ]
        return GatherOutput(bundle=bundle, reasons=reasons)
