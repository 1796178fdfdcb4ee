"""`.enricher-lint.yaml`: which checks run, how they are tuned, and what fails the run.

```yaml
fail_on: warning              # info | warning | error
page_severities: [critical, page]
scrape_interval: 30s          # the promql check wants rate() ranges of at least 2x this
disable: [symptom]            # these checks never run
enable: []                    # when set, only these checks run
checks:
  labels:
    required: [severity, team, service]
    severities: [critical, warning, info]
  annotations:
    required: [summary]
    required_on_page: [runbook_url, dashboard_url]
  exemplars:
    severity: info            # any check: override the severity of all its findings
```

Validated by hand (not pydantic) so `enricher lint` starts quickly; every mistake is a usage
error (exit 2) naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from enricher.lint.durations import parse_duration
from enricher.lint.model import Severity

DEFAULT_FILE = ".enricher-lint.yaml"
_TOP = frozenset(
    ("fail_on", "page_severities", "scrape_interval", "disable", "enable", "checks", "lookback")
)


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the key."""


@dataclass(slots=True)
class Config:
    fail_on: Severity = Severity.WARNING
    page_severities: frozenset[str] = frozenset(("critical", "page"))
    scrape_interval: float = 15.0
    lookback: float = 2 * 3600.0  # live mode: how far back a series must have existed
    disable: frozenset[str] = frozenset()
    enable: frozenset[str] = frozenset()
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options(self, check: str) -> dict[str, Any]:
        return self.checks.get(check, {})

    def option(self, check: str, key: str, default: Any) -> Any:
        return self.checks.get(check, {}).get(key, default)

    def runs(self, check: str) -> bool:
        if check in self.disable:
            return False
        return not self.enable or check in self.enable


def load_config(path: str | None, known_checks: dict[str, frozenset[str]]) -> Config:
    """Read `path`, or `.enricher-lint.yaml` in the working directory if it exists."""
    if path is None:
        if not os.path.exists(DEFAULT_FILE):
            return Config()
        path = DEFAULT_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(data or {}, known_checks)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _names(value: Any, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"`{key}` must be a list of strings")
    return frozenset(value)


def parse_config(data: Any, known_checks: dict[str, frozenset[str]]) -> Config:
    """Build a Config from parsed YAML; `known_checks` maps check id to its option names."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    cfg = Config()
    try:
        if "fail_on" in data:
            cfg.fail_on = Severity.parse(str(data["fail_on"]))
        for key in ("scrape_interval", "lookback"):
            if key in data:
                setattr(cfg, key, parse_duration(str(data[key])))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "page_severities" in data:
        cfg.page_severities = _names(data["page_severities"], "page_severities")
    for key in ("disable", "enable"):
        if key in data:
            ids = _names(data[key], key)
            bad = ids - set(known_checks)
            if bad:
                raise ConfigError(f"`{key}` names unknown check(s): {', '.join(sorted(bad))}")
            setattr(cfg, key, ids)
    checks = data.get("checks") or {}
    if not isinstance(checks, dict):
        raise ConfigError("`checks` must be a mapping of check id to options")
    for check, options in checks.items():
        if check not in known_checks:
            raise ConfigError(f"`checks` names unknown check {check!r}")
        options = options or {}
        if not isinstance(options, dict):
            raise ConfigError(f"`checks.{check}` must be a mapping")
        bad = set(options) - known_checks[check] - {"severity", "enabled"}
        if bad:
            raise ConfigError(f"`checks.{check}`: unknown option(s) {', '.join(sorted(bad))}")
        if "severity" in options:
            try:
                options = {**options, "severity": Severity.parse(str(options["severity"]))}
            except ValueError as exc:
                raise ConfigError(f"`checks.{check}.severity`: {exc}") from None
        if options.get("enabled") is False:
            cfg.disable = cfg.disable | {check}
        cfg.checks[check] = options
    return cfg
