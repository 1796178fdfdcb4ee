"""What the gathers of one incident share: derived results memoised on the identity of
shared backend answers, and the in-flight collection later gathers join."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from enricher.evidence.run import _Run

log = logging.getLogger("enricher.gather")
T = TypeVar("T")


class _Memo:
    """Results derived from shared (cached, coalesced) backend answers, reused by every
    alert of an incident. Keys hold object ids; each entry keeps those objects alive (its
    `refs`), so an id cannot be reused while the entry exists. Values are read-only."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._d: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()

    def get(self, key: Hashable, refs: Any, make: Callable[[], T]) -> T:
        hit = self._d.get(key)
        if hit is not None:
            self._d.move_to_end(key)
            return hit[1]  # type: ignore[no-any-return]
        value = make()
        self._d[key] = (refs, value)
        while len(self._d) > self.size:
            self._d.popitem(last=False)
        return value


class _Shared:
    """A collection run shared by the concurrent gathers of one incident."""

    __slots__ = ("closing", "refs", "run", "task", "waiters")

    def __init__(self, run: _Run, task: asyncio.Future[None]) -> None:
        self.run = run
        self.task = task
        self.waiters = 0
        self.closing = False  # cancelled: not to be joined any more
        self.refs: Any = None


def _adopt(run: _Run, src: _Run) -> None:
    """Copy what the shared collection has gathered so far into this gather's evidence;
    its unanswered steps become this gather's pending steps."""
    ev, sev = run.ev, src.ev
    ev.query = sev.query
    ev.exemplar_query = sev.exemplar_query
    ev.chosen = list(sev.chosen)
    ev.traces = dict(sev.traces)
    ev.trace_logs = dict(sev.trace_logs)
    ev.service_errors = sev.service_errors
    ev.deploy_signals = list(sev.deploy_signals)
    ev.annotations = sev.annotations
    ev.annotations_query = sev.annotations_query
    ev.missing.extend(sev.missing)
    ev.notes.extend(sev.notes)
    ev.stats.raw_trace_bytes += sev.stats.raw_trace_bytes
    ev.stats.raw_log_bytes += sev.stats.raw_log_bytes
    run.pending.update(src.pending)  # empty unless cut off (or a step is still running)
