"""Routing: which notifiers (and which Slack channel or PagerDuty service) get a page.

Why Alertmanager's matcher syntax and first-match-unless-`continue`: the people writing these
routes already write Alertmanager routes, and the same words should mean the same thing here.
Regex matchers are anchored, as in Alertmanager. Each route yields one delivery target per
notifier; a target's name (`slack` for the default route, `slack@payments` for a named route)
is what the outbox stores, so a restart maps a pending delivery back to the same target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from enricher.config import Config, RouteConfig

_MATCHER = re.compile(
    r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^"\s,{}]*)\s*$'
)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        # As in Alertmanager, a missing label is the empty string.
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(got) is not None
        return hit if self.op == "=~" else not hit


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if m is None:
        raise ValueError(f'matcher {text!r}: expected name="value" (or !=, =~, !~)')
    name, op, raw = m.groups()
    value = raw
    if raw.startswith('"'):
        value = re.sub(r"\\(.)", r"\1", raw[1:-1])
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ValueError(f"matcher {text!r}: invalid regex: {exc}") from None
    return Matcher(name, op, value, regex)


class Target(BaseModel):
    """One delivery: a notifier and what a route overrides for it."""

    name: str
    notifier: str
    channel: str | None = None
    routing_key: str | None = Field(default=None, repr=False, exclude=True)


class _Route:
    def __init__(self, index: int, config: RouteConfig, configured: list[str]) -> None:
        self.name = config.name or f"route{index}"
        self.matchers = [parse_matcher(m) for m in config.matchers]
        self.config = config
        wanted = config.notifiers if config.notifiers is not None else configured
        self.targets = [self._target(n) for n in configured if n in wanted]

    def _target(self, notifier: str) -> Target:
        c = self.config
        return Target(
            name=f"{notifier}@{self.name}",
            notifier=notifier,
            channel=c.slack_channel if notifier == "slack" else None,
            routing_key=c.pagerduty_routing_key if notifier == "pagerduty" else None,
        )

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class Router:
    def __init__(self, config: Config, available: list[str] | None = None) -> None:
        configured = available if available is not None else config.notifiers.names()
        self.routes = [_Route(i, r, configured) for i, r in enumerate(config.routes)]
        wanted = config.default_route.notifiers
        self.default = [
            Target(name=n, notifier=n) for n in configured if wanted is None or n in wanted
        ]
        self.by_name: dict[str, Target] = {t.name: t for t in self.default}
        for r in self.routes:
            self.by_name.update({t.name: t for t in r.targets})

    def targets(self, labels: dict[str, str]) -> list[Target]:
        """The targets for a page with these (common) labels; never empty unless the default
        route itself names no notifier."""
        out: list[Target] = []
        for r in self.routes:
            if r.matches(labels):
                out += [t for t in r.targets if t.name not in {x.name for x in out}]
                if not r.config.continue_:
                    return out
        return out or list(self.default)

    def target(self, name: str) -> Target | None:
        """A stored delivery's target; the plain notifier name for rows from before routing."""
        if name in self.by_name:
            return self.by_name[name]
        notifier = name.partition("@")[0]
        return Target(name=name, notifier=notifier) if notifier else None
