"""`file:line: severity check-id: message`, then the hint indented on the next line.

Errors come first, then warnings, then info (house policy last): on a large collection the few
real bugs must not scroll away under hundreds of policy notes. Within a severity, file order.
"""

from __future__ import annotations

from typing import TextIO

from enricher.lint.model import Finding


def write(findings: list[Finding], out: TextIO) -> None:
    lines = []
    for f in sorted(findings, key=lambda f: (-int(f.severity), f.policy)):
        lines.append(f"{f.path}:{f.line}: {f.severity.label} {f.check}: {f.message}")
        if f.hint:
            lines.append(f"    hint: {f.hint}")
    if lines:
        out.write("\n".join(lines) + "\n")
