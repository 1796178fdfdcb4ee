"""Prometheus durations (`5m`, `1h30m`, `2d`), parsed the way the rule loader parses them.

`for`, `keep_firing_for` and group `interval` go through Prometheus' `model.ParseDuration`,
which is stricter than PromQL's range syntax: units must appear largest first, each at most once,
and only integers are allowed. `enricher.durations` parses configuration durations (and imports
pydantic), so it is not the right tool here.
"""

from __future__ import annotations

import re

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_MAX_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str) -> float:
    """Seconds in `text`, or ValueError with promtool's wording."""
    if text == "":
        raise ValueError("empty duration string")
    if text == "0":
        return 0.0
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f'not a valid duration string: "{text}"')
    seconds = 0.0
    for group, unit in zip(m.groups(), _UNITS, strict=True):
        if group is not None:
            seconds += int(group) * unit
    if seconds > _MAX_SECONDS:
        raise ValueError(f'duration out of range: "{text}"')
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus spelling of `seconds` (`90` -> `1m30s`), for messages."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)
