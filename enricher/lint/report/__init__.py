"""Formatters: each turns findings into one output format; checks never print."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from enricher.lint.model import Finding

Formatter = Callable[[list[Finding], TextIO], None]
FORMATS = ("text", "json", "sarif", "github")


def formatter(name: str) -> Formatter:
    """The `write(findings, out)` function for `--format name`."""
    if name == "json":
        from enricher.lint.report.jsonfmt import write
    elif name == "sarif":
        from enricher.lint.report.sarif import write
    elif name == "github":
        from enricher.lint.report.github import write
    else:
        from enricher.lint.report.text import write
    return write
