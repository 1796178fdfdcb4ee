"""Text and links from alerts and logs made safe to show to people.

Why one module: alert labels, annotations and log lines are written by whoever controls a
rule file or a service's logger, and every page carries them to a human (Slack, PagerDuty,
a terminal reading the log notifier, an HTML page). Terminal escapes (`\\x1b[2J` clears a
screen), bidi controls (text that reads backwards), NULs and lone surrogates (bodies that
cannot be encoded) are removed once here, with one definition; each notifier still escapes
for its own markup. The raw values stay in the stored notification, untouched.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# A terminal escape sequence (CSI: colour, cursor, clear; OSC: title, hyperlink) goes whole,
# not just its ESC, or `[31m` would be left behind.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL or ST
    r"|\x1b[@-Z\\-_]"  # other two-character escapes
)
# C0 and C1 controls except tab and newline, DEL, lone surrogates, and the invisible and
# direction-changing format characters (zero-width, bidi embeddings and isolates, BOM).
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]"
)
MAX_URL = 2048


def clean_text(value: str, *, one_line: bool = False) -> str:
    """`value` without terminal escapes and hidden characters; on one line if asked (runs of
    whitespace, newlines included, become one space)."""
    if value.isascii() and value.isprintable():
        return value  # the common case, without a regex pass
    text = _HIDDEN.sub("", _ANSI.sub("", value))
    if one_line:
        text = " ".join(text.split())
    return text


def safe_url(value: str | None, max_len: int = MAX_URL) -> str | None:
    """The URL if it is a whole, plain http(s) link a person may click; otherwise None.

    Why: a `javascript:` or `data:` runbook link in an annotation would run in the reader's
    browser, and a URL with spaces or controls is a different link than it looks. (These URLs
    are shown, never fetched by the service.)"""
    if not value or len(value) > max_len or value.endswith("…"):
        return None
    if _HIDDEN.search(value) or _ANSI.search(value) or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value
