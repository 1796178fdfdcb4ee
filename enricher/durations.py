"""Duration values for configuration: `30s`, `1m`, `500ms`, `2h` or a plain number of seconds.

Why its own module: `enricher/config.py` imports the sources configuration, so the sources
configuration cannot import the duration type from there without a cycle. Both use this one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Turn a duration text into float seconds; other types pass through for pydantic to judge."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 1m or 500ms")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError("expected a duration such as 30s, 1m or 500ms")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
