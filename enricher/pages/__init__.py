"""The human-readable side of a page: `GET /pages/<id>` and `GET /pages`, as server-rendered
HTML with an inline SVG trace waterfall (no script, no external asset; see `html`)."""

from enricher.pages.html import (
    CSP,
    HTML_HEADERS,
    page_from_record,
    render_error,
    render_index,
    render_page,
)
from enricher.pages.waterfall import render_waterfall

__all__ = [
    "CSP",
    "HTML_HEADERS",
    "page_from_record",
    "render_error",
    "render_index",
    "render_page",
    "render_waterfall",
]
