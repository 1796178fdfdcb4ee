"""Runs the checks over loaded rules: comments, config, and no tracebacks.

A check that raises becomes a finding on the rule it was looking at, so one odd rule never
stops the run (the real-world corpora this meets are larger than any test).

Each file can have its own configuration (`configs`, path to Config: the nearest
`.enricher-lint.yaml` above it); files not in it use `config`. Per-rule and per-file checks run
with the file's configuration; cross-file checks (`check_all`) see every rule and run with
`config`, and their findings are kept or dropped by each file's own configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from types import ModuleType
from typing import Any

from enricher.lint.checks import Context, load_checks
from enricher.lint.config import Config
from enricher.lint.loader import Directive, Inputs
from enricher.lint.model import Finding, Rule, RuleFile, Severity

DIRECTIVES = "directives"


def lint(
    inputs: Inputs,
    config: Config,
    prometheus: Any = None,
    configs: Mapping[str, Config] | None = None,
    today: date | None = None,
    only: frozenset[str] | None = None,
    cross: bool = True,
) -> list[Finding]:
    """Every finding for `inputs`, sorted by file and line.

    `only` restricts the per-rule and per-file checks to those files (every rule is still
    read for the cross-file lookups); `cross=False` leaves out the checks over the whole set
    (`check_all`). `enricher.lint.split` uses both to share one run between two processes.
    """
    modules = load_checks()
    known = {m.ID for m in modules}
    configs = configs or {}
    rules = [r for f in inputs.files for r in f.rules]
    base = Context(config, rules, prometheus)
    contexts: dict[int, Context] = {id(config): base}
    selected: dict[int, list[ModuleType]] = {}

    def checks_for(cfg: Config) -> list[ModuleType]:
        got = selected.get(id(cfg))
        if got is None:
            got = selected[id(cfg)] = [
                m
                for m in modules
                if cfg.runs(m.ID) and (prometheus is not None or not m.NEEDS_PROMETHEUS)
            ]
        return got

    def context_for(cfg: Config) -> Context:
        ctx = contexts.get(id(cfg))
        if ctx is None:
            # Query expansion does not depend on the configuration: share its memos.
            ctx = contexts[id(cfg)] = Context(
                cfg,
                rules,
                prometheus,
                _expanded=base._expanded,
                _pinned=base._pinned,
                _pin_index=base._pin_index,
            )
        return ctx

    def per_file(files: list[RuleFile]) -> list[Finding]:
        findings: list[Finding] = []
        for rf in files:
            findings.extend(lint_file(rf, configs.get(rf.path, config)))
        return findings

    def lint_file(rf: RuleFile, cfg: Config) -> list[Finding]:
        findings: list[Finding] = []
        checks = checks_for(cfg)
        ctx = context_for(cfg)
        if cfg.runs(DIRECTIVES) and DIRECTIVES not in rf.disabled:
            findings.extend(_directive_findings(rf, inputs, known, today))
        for module in checks:
            if module.ID in rf.disabled:
                continue
            check_file = getattr(module, "check_file", None)
            if check_file is not None:
                try:
                    findings.extend(check_file(rf, ctx))
                except Exception as exc:
                    findings.append(_internal_error(module, rf, exc))
        runs = [(m, m.ID, m.check) for m in checks if m.ID not in rf.disabled]
        syntax_only = [r for r in runs if r[1] == "syntax"]
        for rule in rf.rules:
            valid = bool(rule.kind) and rule.query is not None
            disabled = rule.disabled
            for module, check_id, check in runs if valid else syntax_only:
                if disabled and check_id in disabled:
                    continue
                try:
                    found = check(rule, ctx)
                except Exception as exc:  # a bug in one check must not hide the others' findings
                    found = [_internal_error(module, rule, exc)]
                if found:
                    findings.extend(found)
        return findings

    findings = per_file(
        inputs.files if only is None else [rf for rf in inputs.files if rf.path in only]
    )
    cross = checks_for(config)
    if configs:
        ids = {
            m.ID for cfg in {id(c): c for c in configs.values()}.values() for m in checks_for(cfg)
        }
        cross = [m for m in modules if m.ID in ids or m in cross]
    if inputs.files and cross:
        by_path = {rf.path: rf for rf in inputs.files}
        for module in cross:
            check_all = getattr(module, "check_all", None)
            if check_all is None:
                continue
            try:
                found = check_all(inputs.files, base)
            except Exception as exc:
                findings.append(_internal_error(module, inputs.files[0], exc))
                continue
            findings.extend(f for f in found if _keeps(module.ID, f, by_path, configs, config))
    findings = _drop_ignored(findings, inputs)
    if configs:
        groups: dict[int, tuple[Config, list[Finding]]] = {}
        for f in findings:
            cfg = configs.get(f.path, config)
            groups.setdefault(id(cfg), (cfg, []))[1].append(f)
        findings = [
            f
            for cfg, group in groups.values()
            for f in apply_severities(group, cfg, checks_for(cfg))
        ]
    else:
        findings = apply_severities(findings, config, checks_for(config))
    findings.sort(key=Finding.sort_key)
    return findings


def _keeps(
    check: str,
    f: Finding,
    by_path: dict[str, RuleFile],
    configs: Mapping[str, Config],
    config: Config,
) -> bool:
    """A cross-file finding stays unless its file, rule or configuration turns the check off."""
    rf = by_path.get(f.path)
    if rf is None:
        return True
    if check in rf.disabled or not configs.get(f.path, config).runs(check):
        return False
    for rule in rf.rules:
        if rule.disabled and rule.line <= f.line <= max(rule.end_line, rule.line):
            return check not in rule.disabled
    return True


def _drop_ignored(findings: list[Finding], inputs: Inputs) -> list[Finding]:
    """`# enricher-lint ignore/next-line` and `ignore/line`: findings on that line go."""
    ignored: dict[tuple[str, int], frozenset[str] | None] = {}
    for path, directives in inputs.directives.items():
        for d in directives:
            if d.kind == "ignore/next-line":
                target = d.line + 1
            elif d.kind == "ignore/line":
                target = d.line
            else:
                continue
            prev = ignored.get((path, target), frozenset())
            ids = None if not d.checks or prev is None else prev | frozenset(d.checks)
            ignored[(path, target)] = ids
    if not ignored:
        return findings
    out = []
    for f in findings:
        key = (f.path, f.line)
        if key in ignored:
            ids = ignored[key]
            if ids is None or f.check in ids:
                continue
        out.append(f)
    return out


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


def _directive_findings(
    rf: RuleFile, inputs: Inputs, known: set[str], today: date | None = None
) -> list[Finding]:
    """Comments that name unknown checks (`syntax`), and comments that do nothing: dangling,
    malformed or expired (`directives`)."""
    directives = inputs.directives.get(rf.path, [])
    if not directives:
        return []
    today = today or date.today()
    out = []
    for d in directives:
        unknown = [c for c in d.checks if c not in known]
        if unknown:
            out.append(
                Finding(
                    rf.path,
                    d.line,
                    "syntax",
                    Severity.WARNING,
                    f"{'disable' if 'disable' in d.kind else d.kind} comment names "
                    f"unknown check(s): {', '.join(unknown)}",
                    f"known checks: {', '.join(sorted(known))}",
                )
            )
        problem = _directive_problem(d, today)
        if problem:
            message, hint, severity = problem
            out.append(Finding(rf.path, d.line, DIRECTIVES, severity, message, hint))
    return out


def _directive_problem(d: Directive, today: date) -> tuple[str, str, Severity] | None:
    what = f"`# enricher-lint {d.kind}{' ' + ', '.join(d.checks) if d.checks else ''}`"
    if d.error:
        return (
            f"line {d.line}: {d.error}; the snooze is not applied",
            "write `# enricher-lint snooze <check>[,<check>] until 2025-12-31`",
            Severity.WARNING,
        )
    if d.kind in ("disable", "snooze") and not d.rule:
        return (
            f"dangling comment: {what} applies to no rule",
            "put it directly above the rule (only blank or comment lines between) or inside it",
            Severity.WARNING,
        )
    if d.kind == "snooze" and d.until is not None and today >= d.until:
        return (
            f"snooze of {', '.join(d.checks)} expired on {d.until.isoformat()}: "
            "the check runs again",
            "fix what the check reports, or snooze it again with a new date",
            Severity.INFO,
        )
    if d.kind == "ignore/next-line" and not d.content:
        return (
            f"dangling comment: {what} is followed by no rule line",
            "put it directly above the line whose findings it ignores",
            Severity.WARNING,
        )
    if d.kind == "ignore/line" and not d.content:
        return (
            f"dangling comment: {what} is alone on its line and ignores nothing",
            "put it at the end of the line to ignore, or use ignore/next-line above it",
            Severity.WARNING,
        )
    return None
