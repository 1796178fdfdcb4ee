"""Escaping, clipping and anchors shared by the page and its waterfall.

Why one place: every string on a page that did not come from this module's own templates is
alert, trace or log content, i.e. written by whoever can reach an instrumented service or
Alertmanager. It goes through `esc`, which bounds it, drops characters that reorder or hide
text (bidi overrides, C0/C1 controls, lone surrogates that would not even encode), and
escapes it for both text and quoted attribute positions.
"""

from __future__ import annotations

import functools
import hashlib
import html
import time
from datetime import UTC, datetime
from typing import Any

from enricher.sanitize import clean_text, safe_url

# C0/C1 controls except tab and newline, bidi embeddings/overrides/isolates and marks, zero
# width characters, BOM, and lone surrogates (JSON allows "\ud800"; UTF-8 does not).
_ANCHOR_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:.-")
MAX_URL = 3000


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def esc(value: object, limit: int = 300) -> str:
    """Alert or log content made inert for HTML text and double-quoted attributes."""
    s = value if isinstance(value, str) else fmt_value(value)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = clean_text(s)
    return html.escape(s, quote=True)


def fmt_value(value: Any) -> str:
    """A span attribute value as OpenTelemetry writes it: `true`, not Python's `True`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


@functools.lru_cache(maxsize=4096)
def anchor(item_id: str) -> str:
    """The element id of an evidence item: injective and free of whitespace and quotes.

    Item ids contain spaces and `$`, `=` (`span:db-primary:SELECT orders`), which an HTML id
    may not hold; every character outside [A-Za-z0-9:.-] becomes `_<hex>_`, so two items can
    never share an anchor. Very long ids keep a prefix and `_<hash>`, which no short id's
    encoding can end with (its escapes are always closed)."""
    if len(item_id) > 160:
        digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        item_id = item_id[:120]
        suffix = "_" + digest  # an unclosed escape: no short id encodes to this
    else:
        suffix = ""
    out = [c if c in _ANCHOR_SAFE else f"_{ord(c):x}_" for c in item_id]
    return "ev-" + "".join(out) + suffix


def safe_href(url: str | None) -> str | None:
    """A URL fit for a user-facing `<a href>`, escaped; None for anything else.

    The bundle's rule (`safe_link`: plain http(s) with a host, so no `javascript:` or `data:`),
    plus a length bound and no hidden characters: a link whose text hides where it goes is
    not shown rather than shown cleaned, because a cleaned URL is a different URL."""
    good = safe_url(url, MAX_URL)
    return html.escape(good, quote=True) if good is not None else None


def ts(dt: datetime | None) -> str:
    """A wall-clock time on a page: UTC, to the second, always with its zone."""
    if dt is None:
        return ""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%SZ")


def ts_ns(value: int) -> str:
    """A log line's time, to the millisecond: lines a few ms apart must stay in order."""
    sec, ns = divmod(value, 1_000_000_000)
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec)) + f".{ns // 1_000_000:03d}Z"
    except (OverflowError, OSError, ValueError):
        return str(value)


def ms(value: float | None) -> str:
    """Milliseconds as people read them on a waterfall: 1210 ms, 15.4 ms, 0.42 ms."""
    if value is None:
        return "?"
    if value == 0:
        return "0 ms"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"
