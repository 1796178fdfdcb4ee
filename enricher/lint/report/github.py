"""`--format github`: workflow commands GitHub Actions turns into annotations on the diff."""

from __future__ import annotations

from typing import TextIO

from enricher.lint.model import Finding, Severity

_COMMAND = {Severity.INFO: "notice", Severity.WARNING: "warning", Severity.ERROR: "error"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def write(findings: list[Finding], out: TextIO) -> None:
    for f in findings:
        message = f.message + (f"\n{f.hint}" if f.hint else "")
        out.write(
            f"::{_COMMAND[f.severity]} file={_prop(f.path)},line={f.line},"
            f"title={_prop('enricher-lint ' + f.check)}::{_data(message)}\n"
        )
