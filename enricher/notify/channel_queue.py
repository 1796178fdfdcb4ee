"""One queue per Slack channel: sends to a channel take turns, spaced and paused as Slack asks.

Why per channel: Slack allows about one message per second per channel, so a burst of pages
to #payments must not delay #search, and a 429 for one channel must not stop the others.
Why a lock per channel: `asyncio.Lock` hands the lock to its waiters in arrival order (a new
caller never jumps the queue while others wait), which is the fair FIFO we want, and a
cancelled waiter simply leaves the queue.

Spacing is between the starts of two requests. A 429 pauses the channel for its Retry-After
(every queued send waits until then) and doubles the channel's spacing, which then decays
back towards `min_interval` with each accepted request: a `min_interval` set below Slack's
real limit would otherwise cost one Retry-After pause per message. Only a 429 after an
accepted request doubles it: a 429 to the request after another 429 says only that Slack is
still refusing, not that our pace is too fast (a minute-long limit would otherwise drive the
spacing to its cap and leave a backlog draining at one message per MAX_SPACING long after
Slack is willing again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# After a 429 the spacing at least doubles, to at least this, and at most MAX_SPACING.
MIN_BACKOFF_SPACING = 0.05
MAX_SPACING = 2.0
DECAY = 0.99


class Lane:
    """One channel's turn-taking state; only the holder of `lock` reads or changes the rest."""

    def __init__(self, min_interval: float) -> None:
        self.lock = asyncio.Lock()
        self.min_interval = min_interval
        self.spacing = min_interval
        self.next_at = 0.0
        self.paused_until = 0.0
        # The last answer was a 429 (no request accepted since).
        self.refused = False

    def pause(self, seconds: float, now: float) -> None:
        """Hold every send to this channel for `seconds` (a 429's Retry-After)."""
        self.paused_until = max(self.paused_until, now + seconds)
        if self.refused:  # still refusing since the last 429: our pace is not the cause
            return
        self.refused = True
        cap = max(self.min_interval, MAX_SPACING)
        self.spacing = min(cap, max(self.spacing * 2, MIN_BACKOFF_SPACING, self.min_interval))

    def accepted(self) -> None:
        self.refused = False
        self.spacing = max(self.min_interval, self.spacing * DECAY)


class ChannelQueue:
    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.clock = clock
        self._lanes: dict[str, Lane] = {}
        self._alias: dict[str, str] = {}

    def key(self, channel: str) -> str:
        return self._alias.get(channel, channel)

    def alias(self, name: str, channel_id: str) -> None:
        """Slack answered `channel_id` for a send to `name` (`#payments`): from now on both
        share one queue. A queue that so far ran under the name moves to the ID, with the
        sends already waiting in it."""
        if name == channel_id or self._alias.get(name) == channel_id:
            return
        self._alias[name] = channel_id
        if name in self._lanes and channel_id not in self._lanes:
            self._lanes[channel_id] = self._lanes.pop(name)

    def lane(self, channel: str) -> Lane:
        key = self.key(channel)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(self.min_interval)
        return lane

    @asynccontextmanager
    async def turn(self, channel: str) -> AsyncIterator[Lane]:
        """Wait for this channel's turn (queue order, spacing, any pause), then hold it while
        the caller makes one request."""
        lane = self.lane(channel)
        async with lane.lock:
            while (delay := max(lane.next_at, lane.paused_until) - self.clock()) > 0:
                await asyncio.sleep(delay)
            lane.next_at = self.clock() + lane.spacing
            yield lane

    def paused_for(self, channel: str) -> float:
        """Seconds until the channel's pause ends (0 when it is not paused)."""
        lane = self._lanes.get(self.key(channel))
        return max(0.0, lane.paused_until - self.clock()) if lane is not None else 0.0
