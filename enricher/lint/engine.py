"""Runs the checks over loaded rules: disable comments, config, and no tracebacks.

A check that raises becomes a finding on the rule it was looking at, so one odd rule never
stops the run (the real-world corpora this meets are larger than any test).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

from enricher.lint.checks import Context, load_checks
from enricher.lint.config import Config
from enricher.lint.loader import Inputs
from enricher.lint.model import Finding, Rule, RuleFile, Severity


def lint(inputs: Inputs, config: Config, prometheus: Any = None) -> list[Finding]:
    """Every finding for `inputs`, sorted by file and line."""
    modules = load_checks()
    known = {m.ID for m in modules}
    checks = [
        m
        for m in modules
        if config.runs(m.ID) and (prometheus is not None or not m.NEEDS_PROMETHEUS)
    ]
    rules = [r for f in inputs.files for r in f.rules]
    ctx = Context(config, rules, prometheus)
    findings: list[Finding] = []
    for rf in inputs.files:
        findings.extend(_directive_findings(rf, inputs, known))
        for module in checks:
            if module.ID in rf.disabled:
                continue
            check_file = getattr(module, "check_file", None)
            if check_file is not None:
                try:
                    findings.extend(check_file(rf, ctx))
                except Exception as exc:
                    findings.append(_internal_error(module, rf, exc))
        runs = [m for m in checks if m.ID not in rf.disabled]
        for rule in rf.rules:
            valid = bool(rule.kind) and rule.query is not None
            for module in runs:
                if rule.disabled and module.ID in rule.disabled:
                    continue
                if not valid and module.ID != "syntax":
                    continue
                try:
                    found = module.check(rule, ctx)
                except Exception as exc:  # a bug in one check must not hide the others' findings
                    found = [_internal_error(module, rule, exc)]
                if found:
                    findings.extend(found)
    for module in checks:
        check_all = getattr(module, "check_all", None)
        if check_all is not None and inputs.files:
            try:
                findings.extend(
                    f
                    for f in check_all(inputs.files, ctx)
                    if module.ID not in _disabled_for(inputs.files, f.path)
                )
            except Exception as exc:
                findings.append(_internal_error(module, inputs.files[0], exc))
    findings = apply_severities(findings, config, checks)
    findings.sort(key=Finding.sort_key)
    return findings


def apply_severities(
    findings: list[Finding], config: Config, checks: list[ModuleType]
) -> list[Finding]:
    """The profile's price for policy findings, then `checks.<id>.severity` overrides."""
    policy = config.policy_severity()
    overrides = {
        m.ID: config.options(m.ID)["severity"] for m in checks if "severity" in config.options(m.ID)
    }
    out = []
    for f in findings:
        if f.policy:
            if policy is None:
                continue
            if f.severity != policy:
                f = replace(f, severity=policy)
        if f.check in overrides:
            f = replace(f, severity=overrides[f.check])
        out.append(f)
    return out


def _disabled_for(files: list[RuleFile], path: str) -> frozenset[str]:
    return next((rf.disabled for rf in files if rf.path == path), frozenset())


def _internal_error(module: ModuleType, target: Rule | RuleFile, exc: Exception) -> Finding:
    rule = target if isinstance(target, Rule) else None
    return Finding(
        target.path,
        rule.line if rule is not None else 1,
        module.ID,
        Severity.WARNING,
        f"internal error in check {module.ID}: {type(exc).__name__}: {exc}",
        f"this is a bug in enricher lint; `# enricher-lint disable {module.ID}` "
        "silences it for this rule",
        rule.name if rule is not None else "",
    )


def _directive_findings(rf: RuleFile, inputs: Inputs, known: set[str]) -> list[Finding]:
    out = []
    for d in inputs.directives.get(rf.path, []):
        unknown = [c for c in d.checks if c not in known]
        if unknown:
            out.append(
                Finding(
                    rf.path,
                    d.line,
                    "syntax",
                    Severity.WARNING,
                    f"disable comment names unknown check(s): {', '.join(unknown)}",
                    f"known checks: {', '.join(sorted(known))}",
                )
            )
    return out
