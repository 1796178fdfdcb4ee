"""`--format json`: one object with the findings and their counts per severity."""

from __future__ import annotations

import json
from typing import TextIO

from enricher.lint.model import Finding, Severity


def write(findings: list[Finding], out: TextIO) -> None:
    doc = {
        "findings": [
            {
                "path": f.path,
                "line": f.line,
                "severity": f.severity.label,
                "check": f.check,
                "rule": f.rule,
                "message": f.message,
                "hint": f.hint,
                "policy": f.policy,
            }
            for f in findings
        ],
        "counts": {s.label: sum(1 for f in findings if f.severity == s) for s in Severity},
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
