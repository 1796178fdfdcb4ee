"""`--format sarif`: SARIF 2.1.0 for GitHub code scanning (one run, one rule per check)."""

from __future__ import annotations

import json
import os
from typing import TextIO

from enricher import __version__
from enricher.lint.checks import load_checks
from enricher.lint.model import Finding, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.INFO: "note", Severity.WARNING: "warning", Severity.ERROR: "error"}


def _uri(path: str) -> str:
    if path == "<stdin>":
        return "stdin"
    rel = os.path.relpath(path) if os.path.isabs(path) else os.path.normpath(path)
    return rel.replace(os.sep, "/")


def _rules() -> list[dict]:
    rules = []
    for module in load_checks():
        doc = (module.__doc__ or "").strip()
        summary = doc.split("\n", 1)[0]
        rules.append(
            {
                "id": module.ID,
                "name": module.ID,
                "shortDescription": {"text": summary},
                "fullDescription": {"text": doc},
                "defaultConfiguration": {"level": _LEVEL[module.SEVERITY]},
                "help": {"text": doc},
            }
        )
    return rules


def write(findings: list[Finding], out: TextIO) -> None:
    rules = _rules()
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in findings:
        result: dict = {
            "ruleId": f.check,
            "level": _LEVEL[f.severity],
            "message": {"text": f.message + (f" ({f.hint})" if f.hint else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.path), "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": max(f.line, 1), "startColumn": max(f.column, 1)},
                    }
                }
            ],
        }
        if f.check in index:
            result["ruleIndex"] = index[f.check]
        if f.rule:
            result["properties"] = {"rule": f.rule}
        results.append(result)
    doc = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "enricher-lint",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
