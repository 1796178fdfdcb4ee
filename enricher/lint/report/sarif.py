"""`--format sarif`: SARIF 2.1.0 for GitHub code scanning (one run, one rule per check).

Locations are relative to the git repository root (`uriBaseId: %SRCROOT%`, the root given in
`originalUriBaseIds`), whatever the working directory, so code scanning finds the files;
a file outside the repository gets an absolute `file://` URI. Every result carries
`partialFingerprints["enricherLint/v1"]`: a hash of the check, the rule name, the message
with numbers and durations blanked and the repository-relative path, so a finding keeps its
identity when lines move or a threshold changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TextIO

from enricher import __version__
from enricher.lint.checks import load_checks
from enricher.lint.model import Finding, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.INFO: "note", Severity.WARNING: "warning", Severity.ERROR: "error"}


FINGERPRINT = "enricherLint/v1"
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?\b")


def _root(findings: list[Finding]) -> str | None:
    """The repository %SRCROOT% stands for: the working directory's, else the first file's."""
    from enricher.lint.vcs import repo_root

    root = repo_root(os.getcwd())
    if root is None:
        first = next((f.path for f in findings if f.path != "<stdin>"), None)
        root = repo_root(first) if first is not None else None
    return root


def _location(path: str, root: str | None) -> dict:
    """`artifactLocation` for `path`: relative to `root` when inside it, else absolute."""
    if path == "<stdin>":
        return {"uri": "stdin", "uriBaseId": "%SRCROOT%"}
    real = os.path.realpath(path)
    if root is not None:
        rel = os.path.relpath(real, root)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return {"uri": rel.replace(os.sep, "/"), "uriBaseId": "%SRCROOT%"}
    return {"uri": Path(real).as_uri()}


def fingerprint(f: Finding, uri: str) -> str:
    """Stable across line shifts and changed numbers: check, rule, normalised message, path."""
    message = _NUMBER.sub("0", f.message)
    key = "\0".join((f.check, f.rule, message, uri))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


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
    root = _root(findings)
    locations: dict[str, dict] = {}
    for f in findings:
        location = locations.get(f.path)
        if location is None:
            location = locations[f.path] = _location(f.path, root)
        result: dict = {
            "ruleId": f.check,
            "level": _LEVEL[f.severity],
            "message": {"text": f.message + (f" ({f.hint})" if f.hint else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": dict(location),
                        "region": {"startLine": max(f.line, 1), "startColumn": max(f.column, 1)},
                    }
                }
            ],
        }
        result["partialFingerprints"] = {FINGERPRINT: fingerprint(f, location["uri"])}
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
                **(
                    {"originalUriBaseIds": {"%SRCROOT%": {"uri": Path(root).as_uri() + "/"}}}
                    if root is not None
                    else {}
                ),
            }
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
