"""`.enricher-lint.yaml`: which checks run, how they are tuned, and what fails the run.

```yaml
profile: default              # default | strict | mixin (see below)
fail_on: error                # info | warning | error; default: error, i.e. bugs only
paging:                       # an alert is a page when any entry matches its labels
  - 'severity=~"critical|page"'
  - 'pager="pagerduty", severity=~"s1|s2"'   # one entry = all of its matchers
prometheus_version: "2.42"    # syntax and functions newer than this are errors
enable_features: []           # Prometheus --enable-feature flags the server runs with
thanos: false                 # accept Thanos rule fields (partial_response_strategy)
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

Profiles decide what house policy (owner labels, runbook and dashboard annotations, `for`
opinions: findings with `policy` set) costs: `default` reports it as info and fails only on
errors (the rule is wrong); `strict` raises it to warning and fails on warnings; `mixin` drops it
(a mixin's consumers add their own team labels and runbooks) and fails on errors.
`page_severities: [critical, page]` (older files) is read as
`paging: ['severity=~"critical|page"']`.

Validated by hand (not pydantic) so `enricher lint` starts quickly; every mistake is a usage
error (exit 2) naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from enricher.lint.durations import parse_duration
from enricher.lint.model import Severity

DEFAULT_FILE = ".enricher-lint.yaml"
CONFIG_NAMES = (DEFAULT_FILE, ".enricher-lint.yml")
_TOP = frozenset(
    (
        "profile",
        "fail_on",
        "paging",
        "page_severities",
        "prometheus_version",
        "enable_features",
        "thanos",
        "scrape_interval",
        "disable",
        "enable",
        "checks",
        "lookback",
    )
)
PROFILES = ("default", "strict", "mixin")
DEFAULT_PAGING = ('severity=~"critical|page"',)
# The Prometheus the project tests against (Debian's 2.42); `--prometheus-version` moves it.
DEFAULT_PROMETHEUS_VERSION = (2, 42)
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "t": "\t"}
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    name: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = self.pattern is not None and self.pattern.fullmatch(got) is not None
        return hit if self.op == "=~" else not hit

    def text(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matchers(text: str) -> tuple[LabelMatcher, ...]:
    """`severity=~"critical|page", pager="pagerduty"` (braces optional) as matchers."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    out: list[LabelMatcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ValueError(
                f"cannot read {body[pos:].strip()!r}: write label matchers like "
                'severity=~"critical|page", pager="pagerduty"'
            )
        name, op, raw = m.group(1), m.group(2), m.group(3)
        value = _ESCAPE.sub(lambda e: _UNESCAPED.get(e.group(1), e.group(1)), raw)
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name}{op}: bad regular expression: {exc}") from None
        out.append(LabelMatcher(name, op, value, pattern))
        pos = m.end()
    if not out:
        raise ValueError("an empty entry matches every alert; give at least one matcher")
    return tuple(out)


def _paging(entries: list[str]) -> tuple[tuple[LabelMatcher, ...], ...]:
    return tuple(parse_matchers(e) for e in entries)


@dataclass(slots=True)
class Config:
    profile: str = "default"
    fail_on: Severity = Severity.ERROR
    paging: tuple[tuple[LabelMatcher, ...], ...] = field(
        default_factory=lambda: _paging(list(DEFAULT_PAGING))
    )
    prometheus_version: tuple[int, int] = DEFAULT_PROMETHEUS_VERSION
    enable_features: frozenset[str] = frozenset()
    thanos: bool = False
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

    def is_page(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with these static labels pages someone (`paging:`)."""
        return any(all(m.matches(labels) for m in entry) for entry in self.paging)

    def paging_text(self) -> str:
        return " or ".join("{" + ", ".join(m.text() for m in e) + "}" for e in self.paging)

    def policy_severity(self) -> Severity | None:
        """What a policy finding becomes under the profile; None drops it."""
        if self.profile == "mixin":
            return None
        return Severity.WARNING if self.profile == "strict" else Severity.INFO

    def apply_profile(self, profile: str, explicit_fail_on: bool = False) -> None:
        if profile not in PROFILES:
            known = ", ".join(PROFILES)
            raise ConfigError(f"unknown profile {profile!r} (expected one of {known})")
        self.profile = profile
        if not explicit_fail_on:
            self.fail_on = Severity.WARNING if profile == "strict" else Severity.ERROR


def parse_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", str(text).strip())
    if m is None:
        raise ValueError(f"Prometheus version {text!r} is not X.Y (for example 2.42 or 3.1)")
    return int(m.group(1)), int(m.group(2))


def find_config(directory: str, cache: dict[str, str | None] | None = None) -> str | None:
    """The nearest `.enricher-lint.yaml` (or `.yml`) in `directory` or above it.

    The search stops at the root of the git work tree holding `directory` (the first directory
    with a `.git` entry), or at the filesystem root outside any repository: a config in a home
    directory above a checkout never leaks into it.
    """
    cache = {} if cache is None else cache
    seen = []
    d = os.path.abspath(directory)
    found: str | None = None
    while True:
        if d in cache:
            found = cache[d]
            break
        seen.append(d)
        hit = next(
            (os.path.join(d, n) for n in CONFIG_NAMES if os.path.isfile(os.path.join(d, n))), None
        )
        if hit is not None:
            found = hit
            break
        parent = os.path.dirname(d)
        if parent == d or os.path.exists(os.path.join(d, ".git")):
            break
        d = parent
    for s in seen:
        cache[s] = found
    return found


class ConfigResolver:
    """Per-file configurations: each file gets the nearest config above it (see
    `find_config`); a file with none above it gets the working directory's (`base`). Each
    config file is read and validated once; `adjust` applies the command line to each."""

    def __init__(
        self,
        known_checks: Mapping[str, Any],
        adjust: Any = None,
        cwd: str | None = None,
    ) -> None:
        self.known = known_checks
        self.adjust = adjust
        self._dirs: dict[str, str | None] = {}
        self._loaded: dict[str | None, Config] = {}
        self.base_path = find_config(cwd or os.getcwd(), self._dirs)
        self.base = self._load(self.base_path)

    def _load(self, path: str | None) -> Config:
        cfg = self._loaded.get(path)
        if cfg is None:
            cfg = load_config(path, self.known) if path is not None else Config()
            if self.adjust is not None:
                self.adjust(cfg)
            self._loaded[path] = cfg
        return cfg

    def path_for(self, file: str) -> str | None:
        if file == "<stdin>":
            return self.base_path
        return find_config(os.path.dirname(os.path.abspath(file)), self._dirs) or self.base_path

    def for_files(self, files: list[str]) -> dict[str, Config]:
        """The files whose config is not `base` (empty when one config covers every file)."""
        out = {}
        for file in files:
            path = self.path_for(file)
            if path != self.base_path:
                out[file] = self._load(path)
        return out


def load_config(path: str | None, known_checks: Mapping[str, Any]) -> Config:
    """Read `path`, or the nearest `.enricher-lint.yaml` from the working directory up."""
    if path is None:
        path = find_config(os.getcwd())
        if path is None:
            return Config()
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


def _check_option_types(check: str, options: dict[str, Any], defaults: Any) -> None:
    """An option whose default is a list must be given a list (a string would be read per
    character: `required: severity` would ask for labels `s`, `e`, `v`...)."""
    if not isinstance(defaults, Mapping):
        return
    for key, value in options.items():
        if key not in defaults:
            continue
        default = defaults[key]
        where = f"`checks.{check}.{key}`"
        if isinstance(default, Mapping):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a mapping, got {value!r}")
            bad = set(value) - set(default)
            if bad:
                raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(map(str, bad)))}")
            _check_option_types(f"{check}.{key}", value, default)
        elif isinstance(default, list | tuple | frozenset | set):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                got = type(value).__name__
                raise ConfigError(
                    f"{where} must be a list of strings, got {got} {value!r}"
                    + (f"; write [{value}]" if isinstance(value, str) else "")
                )
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif isinstance(default, int | float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ConfigError(f"{where} must be a number, got {value!r}")


def parse_config(data: Any, known_checks: Mapping[str, Any]) -> Config:
    """Build a Config from parsed YAML; `known_checks` maps check id to its option defaults
    (or just their names)."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    cfg = Config()
    try:
        if "profile" in data:
            cfg.apply_profile(str(data["profile"]))
        if "fail_on" in data:
            cfg.fail_on = Severity.parse(str(data["fail_on"]))
        for key in ("scrape_interval", "lookback"):
            if key in data:
                setattr(cfg, key, parse_duration(str(data[key])))
        if "prometheus_version" in data:
            cfg.prometheus_version = parse_version(str(data["prometheus_version"]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "enable_features" in data:
        cfg.enable_features = _names(data["enable_features"], "enable_features")
    if "thanos" in data:
        if not isinstance(data["thanos"], bool):
            raise ConfigError(f"`thanos` must be true or false, got {data['thanos']!r}")
        cfg.thanos = data["thanos"]
    entries: list[str] = []
    if "paging" in data:
        _names(data["paging"], "paging")
        entries += data["paging"]
    if "page_severities" in data:
        names = sorted(_names(data["page_severities"], "page_severities"))
        if names:
            alternatives = "|".join(re.escape(n).replace("\\", "\\\\") for n in names)
            entries.append(f'severity=~"{alternatives}"')
    if "paging" in data or "page_severities" in data:
        paging = []
        for i, entry in enumerate(entries):
            try:
                paging.append(parse_matchers(entry))
            except ValueError as exc:
                raise ConfigError(f"`paging[{i}]` {entry!r}: {exc}") from None
        cfg.paging = tuple(paging)
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
        bad = set(options) - set(known_checks[check]) - {"severity", "enabled"}
        if bad:
            raise ConfigError(f"`checks.{check}`: unknown option(s) {', '.join(sorted(bad))}")
        _check_option_types(check, options, known_checks[check])
        if "enabled" in options and not isinstance(options["enabled"], bool):
            raise ConfigError(
                f"`checks.{check}.enabled` must be true or false, got {options['enabled']!r}"
            )
        if "severity" in options:
            try:
                options = {**options, "severity": Severity.parse(str(options["severity"]))}
            except ValueError as exc:
                raise ConfigError(f"`checks.{check}.severity`: {exc}") from None
        if options.get("enabled") is False:
            cfg.disable = cfg.disable | {check}
        cfg.checks[check] = options
    return cfg
