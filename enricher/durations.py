"""Duration values for configuration: `30s`, `1m`, `500ms`, `2h` or a plain number of seconds.

Why its own module: `enricher/config.py` imports the sources configuration, so the sources
configuration cannot import the duration type from there without a cycle. Both use this one.

Two types, because a zero means different things: `Seconds` may be 0 where 0 switches
something off (a cache TTL, a retry pause, pacing), `PositiveSeconds` is for timeouts,
deadlines, leases and intervals, where 0 does not mean "off" but "fail at once": a `0s`
deadline pages every alert degraded without evidence, a `0` HTTP timeout fails every call.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_EXPECTED = "expected a duration such as 30s, 1m or 500ms"


def parse_duration(value: Any) -> Any:
    """Turn a duration text into float seconds; other types pass through for pydantic to judge."""
    if isinstance(value, bool):
        raise ValueError(_EXPECTED)
    if isinstance(value, int | float):
        # YAML reads `.inf` and `.nan` as floats; an endless timeout never fires, and every
        # comparison with NaN is false, so neither can bound anything.
        if not math.isfinite(value):
            raise ValueError(f"{_EXPECTED}, not {value}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(_EXPECTED)
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


def format_duration(seconds: float) -> str:
    """A duration as it would be written in the file (`3s`, `500ms`, `2m`), for messages."""
    if 0 < abs(seconds) < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(
            f"must be longer than 0s, got {format_duration(value)}: "
            "a timeout, deadline or interval of zero or less expires at once"
        )
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
