"""Configuration: one YAML file, `ENRICHER_*` environment overrides, validated at start-up.

Why one model: an operator must learn about a bad value before the first alert arrives, with
the exact field path (`notifiers.webhook.url: invalid URL`), not at 3 a.m. when a stage first
touches it. Every field has a default, so the service runs with no file at all.

Environment overrides use `ENRICHER_` plus the field path joined by double underscores:
`ENRICHER_LISTEN`, `ENRICHER_DATA_DIR`, `ENRICHER_INTAKE__MAX_BODY_BYTES`. Values are read as
YAML scalars, so `ENRICHER_NOTIFIERS__LOG__ENABLED=false` is a boolean. Secrets can also come
from files: every `*_file` field is read at start-up and wins over the inline value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from enricher.analysis.config import AnalysisConfig
from enricher.durations import PositiveSeconds, Seconds, format_duration
from enricher.sources.config import SourcesConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _read_secret(inline: str | None, path: Path | None, what: str) -> str | None:
    """The secret in `path` (stripped) if given, else `inline`.

    Errors name the field and the path, so a missing mount is found at once, and never the
    content: not even the byte a decode error stopped at. An empty file is refused: it is
    a mount or provisioning failure, never a credential anyone meant."""
    if path is None:
        return inline
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return text


class BasicAuth(_Model):
    username: str
    password: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _load(self) -> BasicAuth:
        self.password = _read_secret(self.password, self.password_file, "password_file")
        if not self.password:
            raise ValueError("password or password_file is required")
        return self


class AuthConfig(_Model):
    """Credentials Alertmanager sends through `http_config` (authorization or basic_auth)."""

    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    basic: BasicAuth | None = None

    @model_validator(mode="after")
    def _load(self) -> AuthConfig:
        self.bearer_token = _read_secret(
            self.bearer_token, self.bearer_token_file, "bearer_token_file"
        )
        if self.bearer_token is not None and not self.bearer_token:
            raise ValueError("bearer_token is empty")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_token or self.basic)


class IntakeConfig(_Model):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Beyond this many unfinished jobs the intake answers 503 so Alertmanager keeps retrying
    # instead of us accepting work we cannot page on in time.
    max_backlog: int = Field(default=200_000, ge=1)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    # Connection hygiene (enricher/intake/connections.py): a client gets this long to send a
    # request's headers, from connecting or from its previous response; then the body.
    header_timeout: PositiveSeconds = 10.0
    body_timeout: PositiveSeconds = 30.0
    # An idle keep-alive connection is closed after this (Alertmanager reconnects at once).
    idle_timeout: PositiveSeconds = 75.0
    # Connections beyond this are answered 503 and closed at once, before any file
    # descriptor the service needs is gone. Keep it below the open-file limit.
    max_connections: int = Field(default=768, ge=1, le=1_000_000)


_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisStoreConfig(_Model):
    """The Redis backend (`store.backend: redis`); see `enricher/store/redis.py`."""

    # redis://[user:password@]host:port/db, rediss:// for TLS, unix:///path/redis.sock
    url: str = "redis://127.0.0.1:6379/0"
    # Set instead of a password in the URL (the file wins over the inline value).
    password: str | None = None
    password_file: Path | None = None
    # Every key starts with this: several services (or test runs) can share one Redis.
    prefix: str = Field(default="enricher:", min_length=1, max_length=100)
    # Refuse to start unless the server acknowledges a write only once it is fsynced
    # (appendonly yes, appendfsync always, no eviction); false runs anyway, warning loudly.
    require_durable: bool = True
    # How long a notification's idempotency key is remembered: a re-delivery after this is a
    # new notification. Keep it at least as long as Alertmanager's repeat_interval.
    idempotency_ttl: PositiveSeconds = 7 * 86400.0
    socket_timeout: PositiveSeconds = 2.0
    connect_timeout: PositiveSeconds = 2.0
    # Connections in the pool; a call waits up to socket_timeout for a free one.
    max_connections: int = Field(default=128, ge=1, le=10_000)

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix(cls, value: Any) -> Any:
        """An unquoted `svc:` (in the file or ENRICHER_STORE__REDIS__PREFIX) reads as YAML's
        mapping {svc: null}: take it back as the text it was."""
        if isinstance(value, dict) and len(value) == 1:
            [(key, inner)] = value.items()
            if inner is None and isinstance(key, str):
                return f"{key}:"
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in _REDIS_SCHEMES or not rest:
            raise ValueError(
                "must be a redis://host:port/db, rediss://host:port/db or unix:///path URL"
            )
        return value

    @model_validator(mode="after")
    def _load(self) -> RedisStoreConfig:
        self.password = _read_secret(self.password, self.password_file, "password_file")
        return self


class StoreConfig(_Model):
    backend: Literal["sqlite", "redis"] = "sqlite"
    # FULL: a 2xx means the notification reached the disk. NORMAL trades that for speed.
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    max_batch: int = Field(default=512, ge=1, le=10_000)
    # Finished notifications, pages and deploy events older than this are deleted.
    retention: Seconds = Field(default=14 * 86400.0, ge=3600)
    redis: RedisStoreConfig = Field(default_factory=RedisStoreConfig)

    @field_validator("synchronous", mode="before")
    @classmethod
    def _synchronous(cls, value: Any) -> Any:
        """SQLite takes the mode in any case; OFF is refused rather than offered because with
        no syncs at all a power loss can corrupt the database, not just lose the last writes.
        Non-strings (YAML's unquoted OFF is a boolean) go on to the type check, whose error
        `load_config` explains."""
        if not isinstance(value, str):
            return value
        mode = value.strip().upper()
        if mode in _SYNCHRONOUS:
            return mode
        why = (
            ": with no syncs a power loss can corrupt the store"
            if mode == "OFF"
            else f", got {value[:40]!r}"
        )
        raise ValueError(f"must be FULL, NORMAL or EXTRA{why}")


class StageTimeouts(_Model):
    gather: PositiveSeconds = 8.0
    analyse: PositiveSeconds = 15.0
    deliver: PositiveSeconds = 10.0


class PipelineConfig(_Model):
    # Jobs in progress at once. Mostly they wait on backends (a hung Tempo holds one for the
    # whole gather budget), so this is a count of waits, not of CPUs: too few, and an alert
    # storm queues behind them and its later pages go out with no time left for evidence.
    # The backends are protected by their own per-backend limits (sources.*.concurrency).
    workers: int = Field(default=256, ge=1, le=4096)
    lease: PositiveSeconds = 60.0
    # Time from receipt until the page must be out, by severity label; `default` for the rest.
    deadlines: dict[str, PositiveSeconds] = Field(default_factory=lambda: {"default": 30.0})
    # Time kept back from the deadline for delivery itself.
    delivery_reserve: Seconds = 3.0
    timeouts: StageTimeouts = Field(default_factory=StageTimeouts)
    max_delivery_attempts: int = Field(default=8, ge=1)
    # 0 is allowed: release every running job at once on SIGTERM (it resumes on restart).
    shutdown_grace: Seconds = 20.0

    def deadline_for(self, severity: str) -> float:
        return self.deadlines.get(severity.lower(), self.deadlines.get("default", 30.0))

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: float) -> float:
        """Leases are renewed every lease/3 but at most twice a second (`Pipeline._renew`): a
        shorter lease runs out between renewals and another worker runs the job a second time."""
        if value < 1.0:
            raise ValueError(
                f"must be at least 1s, got {format_duration(value)}: leases are renewed at most "
                "twice a second, so a shorter one expires while its job runs"
            )
        return value

    @field_validator("deadlines")
    @classmethod
    def _deadline_keys(cls, value: dict[str, float]) -> dict[str, float]:
        """`deadline_for` looks severities up in lower case: a `Critical:` key would never
        match, and the alert would silently get the default deadline."""
        out: dict[str, float] = {}
        for key, seconds in value.items():
            low = key.strip().lower()
            if low in out:
                raise ValueError(f"{key!r} and another key are the same severity ({low!r})")
            out[low] = seconds
        return out

    @model_validator(mode="after")
    def _reserve_within_deadlines(self) -> PipelineConfig:
        """The reserve comes off every deadline before gather and analyse start: one at or
        above a deadline leaves those stages no time at all, and every page of that severity
        goes out degraded, without evidence."""
        deadlines = dict(self.deadlines)
        deadlines.setdefault("default", 30.0)  # what `deadline_for` falls back to
        short = [
            f"deadlines.{name} is {format_duration(d)}"
            for name, d in deadlines.items()
            if d <= self.delivery_reserve
        ]
        if short:
            raise ValueError(
                f"delivery_reserve ({format_duration(self.delivery_reserve)}) must be shorter "
                f"than every deadline, but {', '.join(short)}: the reserve is kept back from "
                "the deadline, and gather and analyse would get no time at all"
            )
        return self


class LogNotifierConfig(_Model):
    enabled: bool = True


class WebhookNotifierConfig(_Model):
    """POSTs each page as JSON to a URL we were configured with (never one from an alert)."""

    url: AnyHttpUrl
    timeout: PositiveSeconds = 5.0
    bearer_token: str | None = None
    bearer_token_file: Path | None = None

    @model_validator(mode="after")
    def _load(self) -> WebhookNotifierConfig:
        self.bearer_token = _read_secret(
            self.bearer_token, self.bearer_token_file, "bearer_token_file"
        )
        return self


_PD_SEVERITIES = ("critical", "error", "warning", "info")


class PagerDutyNotifierConfig(_Model):
    """PagerDuty Events API v2. The routing key is the credential: it is never logged and
    never appears on a page."""

    routing_key: str | None = Field(default=None, repr=False)
    routing_key_file: Path | None = None
    url: AnyHttpUrl = AnyHttpUrl("https://events.pagerduty.com/v2/enqueue")
    timeout: PositiveSeconds = 10.0
    # The alert's severity label -> PagerDuty severity; unmapped values become `default_severity`.
    severities: dict[str, str] = Field(
        default_factory=lambda: {
            "critical": "critical",
            "page": "critical",
            "error": "error",
            "high": "error",
            "warning": "warning",
            "warn": "warning",
            "info": "info",
            "none": "info",
        }
    )
    default_severity: str = "error"

    @model_validator(mode="after")
    def _load(self) -> PagerDutyNotifierConfig:
        self.routing_key = _read_secret(self.routing_key, self.routing_key_file, "routing_key_file")
        if not self.routing_key:
            raise ValueError("routing_key or routing_key_file is required")
        for k, v in {**self.severities, "default_severity": self.default_severity}.items():
            if v not in _PD_SEVERITIES:
                raise ValueError(f"severity {k}: {v!r} is not one of {', '.join(_PD_SEVERITIES)}")
        return self


class SlackNotifierConfig(_Model):
    """Slack, in one of two modes. Incoming webhook (`webhook_url`): post only. Bot token
    (`bot_token`, `channel`): `chat.postMessage`, then `chat.update` when the analysis is
    updated or the alert resolves, and the detail in a thread reply. The URL and the token are
    credentials: never logged, never on a page."""

    webhook_url: str | None = Field(default=None, repr=False)
    webhook_url_file: Path | None = None
    bot_token: str | None = Field(default=None, repr=False)
    bot_token_file: Path | None = None
    # The default channel (an ID such as C0123 or a name such as #oncall); routes may override.
    channel: str | None = None
    api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api")
    timeout: PositiveSeconds = 10.0
    # Slack allows about one message per second per channel; sends to one channel are queued
    # and spaced by this much (a 429's Retry-After pauses the channel for as long as it says).
    min_interval: Seconds = Field(default=1.0, ge=0)
    # Bot mode: all hypotheses, more log lines and stage timings in a thread reply.
    thread_detail: bool = True

    @model_validator(mode="after")
    def _load(self) -> SlackNotifierConfig:
        self.webhook_url = _read_secret(self.webhook_url, self.webhook_url_file, "webhook_url_file")
        self.bot_token = _read_secret(self.bot_token, self.bot_token_file, "bot_token_file")
        if bool(self.webhook_url) == bool(self.bot_token):
            raise ValueError("set exactly one of webhook_url(_file) or bot_token(_file)")
        if self.webhook_url and not self.webhook_url.startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an http(s) URL")
        if self.bot_token and not self.channel:
            raise ValueError("channel is required with bot_token")
        return self

    @property
    def bot(self) -> bool:
        return bool(self.bot_token)


class AlertmanagerForwardConfig(_Model):
    """Posts enriched alerts back to an Alertmanager (`POST /api/v2/alerts`) with the evidence
    as annotations and a marker label, so receivers a team already has get it."""

    url: AnyHttpUrl
    timeout: PositiveSeconds = 5.0
    # The marker label: the Alertmanager route sends alerts carrying it to the real receivers
    # and never back to the enricher; the intake ignores alerts that carry it.
    label: str = Field(default="enriched", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    annotation_prefix: str = Field(default="enricher_", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    bearer_token: str | None = Field(default=None, repr=False)
    bearer_token_file: Path | None = None
    basic: BasicAuth | None = None

    @model_validator(mode="after")
    def _load(self) -> AlertmanagerForwardConfig:
        self.bearer_token = _read_secret(
            self.bearer_token, self.bearer_token_file, "bearer_token_file"
        )
        return self


class NotifiersConfig(_Model):
    log: LogNotifierConfig = Field(default_factory=LogNotifierConfig)
    webhook: WebhookNotifierConfig | None = None
    pagerduty: PagerDutyNotifierConfig | None = None
    slack: SlackNotifierConfig | None = None
    alertmanager: AlertmanagerForwardConfig | None = None

    def names(self) -> list[str]:
        """The configured notifiers, in delivery order."""
        out = ["log"] if self.log.enabled else []
        return out + [
            n for n in ("webhook", "pagerduty", "slack", "alertmanager") if getattr(self, n)
        ]


class RouteConfig(_Model):
    """Which notifiers get an alert: Alertmanager's matcher syntax on the group's labels
    (`team="payments"`, `severity=~"critical|page"`, `env!="dev"`, `service!~"batch-.*"`),
    all of which must match. The first matching route wins unless it says `continue: true`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    matchers: list[str] = Field(default_factory=list)
    # Notifier names (log, webhook, slack, pagerduty, alertmanager); unset means all configured.
    notifiers: list[str] | None = None
    slack_channel: str | None = None
    pagerduty_routing_key: str | None = Field(default=None, repr=False)
    pagerduty_routing_key_file: Path | None = None
    continue_: bool = Field(default=False, alias="continue")

    @model_validator(mode="after")
    def _load(self) -> RouteConfig:
        self.pagerduty_routing_key = _read_secret(
            self.pagerduty_routing_key,
            self.pagerduty_routing_key_file,
            "pagerduty_routing_key_file",
        )
        from enricher.notify.routing import parse_matcher

        for m in self.matchers:
            parse_matcher(m)  # raises ValueError naming the matcher
        return self


class DefaultRouteConfig(_Model):
    """Where an alert goes when no route matches; unset `notifiers` means all configured."""

    notifiers: list[str] | None = None


class ApiConfig(_Model):
    """Read access to pages (`/pages`, `/api/v1/pages`): they hold log lines, span attributes
    and deploy details. Unset, the intake's credentials are required when it has any."""

    auth: AuthConfig | None = None
    # /metrics needs the read credentials too. Off by default: Prometheus scrapers are set
    # up without them, and the metrics carry counts and latencies, not alert content.
    protect_metrics: bool = False


class Config(_Model):
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^\[?[^\s\]]*\]?:\d{1,5}$")
    data_dir: Path = Path("./data")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    notifiers: NotifiersConfig = Field(default_factory=NotifiersConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    default_route: DefaultRouteConfig = Field(default_factory=DefaultRouteConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    # Where people reach this service (https://enricher.example.com): pages link to it.
    public_url: AnyHttpUrl | None = None
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)

    @model_validator(mode="after")
    def _routes(self) -> Config:
        configured = set(self.notifiers.names())
        for i, r in enumerate(self.routes):
            for n in r.notifiers or []:
                if n not in configured:
                    raise ValueError(
                        f"routes[{i}].notifiers: {n!r} is not configured "
                        f"(configured: {', '.join(sorted(configured)) or 'none'})"
                    )
            if r.slack_channel and not (self.notifiers.slack and self.notifiers.slack.bot):
                raise ValueError(f"routes[{i}].slack_channel needs notifiers.slack.bot_token")
            if r.pagerduty_routing_key and self.notifiers.pagerduty is None:
                raise ValueError(f"routes[{i}].pagerduty_routing_key needs notifiers.pagerduty")
        for n in self.default_route.notifiers or []:
            if n not in configured:
                raise ValueError(f"default_route.notifiers: {n!r} is not configured")
        return self

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        """The socket layer takes a port modulo 65536 on some paths (99999 binds 34463): a
        typo must stop the start, not open a port nobody points Alertmanager at."""
        host, _, port = value.rpartition(":")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port must be 1 to 65535, got {port}")
        bare = host.strip("[]")
        if ":" in bare and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"an IPv6 address is written in brackets: [{bare}]:{port}")
        return value

    @property
    def read_auth(self) -> AuthConfig:
        """Who may read pages: `api.auth`, else the intake's credentials."""
        return self.api.auth if self.api.auth is not None else self.intake.auth

    def exposure_warnings(self) -> list[str]:
        """What start-up should warn about: pages (log lines, span attributes, deploy
        details) readable by anyone who can reach a port bound beyond loopback."""
        host = self.host_port[0]
        if host in ("localhost", "::1") or host.startswith("127."):
            return []
        out = []
        if not self.read_auth.enabled:
            out.append(
                f"listening on {self.listen} with the pages API open to anyone who can reach "
                "it: set api.auth (or intake.auth) so reading pages needs credentials"
            )
        if not self.intake.auth.enabled:
            out.append(
                f"listening on {self.listen} with no intake.auth: anyone who can reach it can "
                "post alerts that page"
            )
        return out

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


class ConfigError(Exception):
    """Raised with every invalid field named by its dotted path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _format_errors(
    exc: ValidationError, origins: Mapping[tuple[str, ...], str] | None = None
) -> list[str]:
    """One line per problem, the field by its dotted path and, when the value came from the
    environment or the command line, by where it came from: an operator looking in the YAML
    file for a value the environment set would never find it."""
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        path = ".".join(loc) or "(root)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "url_parsing" or err["type"].startswith("url_"):
            msg = f"invalid URL ({msg})"
        if loc[-1:] == ("synchronous",) and isinstance(err.get("input"), bool):
            msg = (
                "must be FULL, NORMAL or EXTRA: YAML read an unquoted OFF/ON/NO/YES as a "
                "boolean; quote the mode, and note OFF is refused (with no syncs a power loss "
                "can corrupt the store)"
            )
        origin = _origin(loc, origins or {})
        out.append(f"{path}: {msg}" + (f" (from {origin})" if origin else ""))
    return out


def _origin(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    # A check over a whole section (`pipeline`) blames every override inside it.
    inside = sorted(v for k, v in origins.items() if k[: len(loc)] == loc and loc)
    return ", ".join(inside) or None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn `ENRICHER_A__B=v` into {"a": {"b": v}}, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("ENRICHER_") or key == "ENRICHER_CONFIG":
            continue
        path = [p.lower() for p in key[len("ENRICHER_") :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list) or value is None:
            value = raw if value is None else value
        node = tree
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the file (if any), apply environment then command-line overrides, validate."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("ENRICHER_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        data = loaded
    origins: dict[tuple[str, ...], str] = {}
    for key in environ:
        if key.startswith("ENRICHER_") and key != "ENRICHER_CONFIG":
            parts = tuple(p.lower() for p in key[len("ENRICHER_") :].split("__") if p)
            if parts:
                origins[parts] = f"environment variable {key}"
    _merge(data, env_overrides(environ))
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        _merge(data, given)
        origins.update({(k,): f"the --{k.replace('_', '-')} option" for k in given})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc, origins)
        if path:
            problems = [p if "(from " in p else f"{p} (in {path})" for p in problems]
        raise ConfigError(problems) from None
