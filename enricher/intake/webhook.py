"""The Alertmanager webhook body (version 4), as the intake accepts it.

The models are strict where a wrong value would corrupt deduplication or the page
(version, status, timestamps) and lenient where Alertmanager versions differ (unknown
fields are ignored; `notification_reason` and `routeLabels` are optional). Timestamps keep
their original text because the idempotency key must match byte for byte across HA
Alertmanagers; `datetime` views are derived on demand.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

# RFC 3339 as Go's time.Time marshals it: optional fraction of up to 9 digits, Z or offset.
# Field ranges are in the pattern so pydantic checks them in Rust; only days past the 28th
# need a calendar (see _check_day), which keeps the hot path out of Python for most values.
_RFC3339_PATTERN = (
    r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):([0-5]\d):([0-5]\d|60)"
    r"(\.\d{1,9})?([Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
_RFC3339 = re.compile(_RFC3339_PATTERN)
ZERO_TIME = "0001-01-01T00:00:00Z"


def _check_day(value: str) -> None:
    if value[8:10] > "28":
        try:
            datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]))
        except ValueError as exc:
            raise ValueError(f"invalid date {value!r}: {exc}") from None


# The pattern runs in Rust; the calendar check for days past the 28th runs once per message
# (WebhookMessage._calendar) instead of once per field, which matters for 50-alert groups.
Rfc3339 = Annotated[str, StringConstraints(pattern=_RFC3339_PATTERN)]


def parse_time(value: str) -> datetime:
    """Parse Go's RFC 3339 text, truncating nanoseconds to Python's microseconds."""
    m = _RFC3339.match(value)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    second = "59" if second == "60" else second  # a leap second reads as its predecessor
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro:06d}"
    tzpart = "+00:00" if tz in ("Z", "z") else tz
    try:
        return datetime.fromisoformat(text + tzpart).astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"invalid date or time: {exc}") from None


Labels = dict[str, str]


class Alert(BaseModel):
    """One alert inside a notification."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: Rfc3339
    endsAt: Rfc3339 = ZERO_TIME
    generatorURL: str = ""
    fingerprint: str = ""

    @property
    def starts_at(self) -> datetime:
        return parse_time(self.startsAt)

    @property
    def ends_at(self) -> datetime | None:
        """None while firing: Alertmanager blanks endsAt to the zero time for firing alerts."""
        if self.endsAt == ZERO_TIME or self.endsAt.startswith("0001-"):
            return None
        return parse_time(self.endsAt)

    @property
    def identity(self) -> str:
        """The fingerprint, or a hash of the label set when a sender leaves it out."""
        if self.fingerprint:
            return self.fingerprint
        canon = "\x00".join(f"{k}\x01{v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class WebhookMessage(BaseModel):
    """The body Alertmanager posts to a webhook receiver."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: str = ""
    notification_reason: str | None = None
    routeLabels: Labels | None = None
    alerts: list[Alert] = Field(min_length=1)

    @model_validator(mode="after")
    def _calendar(self) -> WebhookMessage:
        for i, a in enumerate(self.alerts):
            if a.startsAt[8:10] <= "28" and a.endsAt[8:10] <= "28":
                continue  # the pattern already bounds the rest of the date
            for field, value in (("startsAt", a.startsAt), ("endsAt", a.endsAt)):
                try:
                    _check_day(value)
                except ValueError as exc:
                    raise PydanticCustomError(
                        "invalid_date",
                        "alerts.{i}.{field}: {msg}",
                        {"i": i, "field": field, "msg": str(exc)},
                    ) from None
        return self

    def idempotency_key(self) -> str:
        """Same key for every re-delivery of one notification, from either HA Alertmanager.

        Built from the group, the notification status, and each alert's identity and the
        time that defines its current state (startsAt while firing, endsAt once resolved),
        so a retry or a repeat notification collides while a new firing or a resolution
        does not.
        """
        h = hashlib.sha256()
        h.update(self.groupKey.encode("utf-8", "surrogatepass"))
        h.update(b"\x00" + self.status.encode())
        parts = sorted(
            f"{a.identity}|{a.status}|{a.startsAt if a.status == 'firing' else a.endsAt}"
            for a in self.alerts
        )
        for p in parts:
            h.update(b"\x00" + p.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def without_marked(self, label: str, value: str = "true") -> WebhookMessage | None:
        """The message without the alerts carrying `label=value` (alerts the enricher already
        enriched and forwarded to Alertmanager): itself when none do, None when all do.

        Why: paging such an alert again would loop through Alertmanager forever. The common
        labels and annotations and the status are recomputed over the alerts that are left,
        as Alertmanager would have sent them for that group.
        """
        kept = [a for a in self.alerts if a.labels.get(label) != value]
        if len(kept) == len(self.alerts):
            return self
        if not kept:
            return None

        def common(maps: list[Labels]) -> Labels:
            first, rest = maps[0], maps[1:]
            return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}

        return self.model_copy(
            update={
                "alerts": kept,
                "status": "firing" if any(a.status == "firing" for a in kept) else "resolved",
                "commonLabels": common([a.labels for a in kept]),
                "commonAnnotations": common([a.annotations for a in kept]),
            }
        )

    def severity(self) -> str:
        """The most urgent severity label among the alerts, for scheduling and deadlines."""
        seen = {a.labels.get("severity", "") for a in self.alerts}
        # Ties between equally urgent names (critical, page) break by name: deterministic.
        return min(seen, key=lambda s: (severity_rank(s), s)) if seen else ""


_RANKS = {
    "critical": 0,
    "page": 0,
    "emergency": 0,
    "high": 1,
    "error": 1,
    "major": 1,
    "warning": 2,
    "medium": 2,
    "minor": 3,
    "low": 3,
    "info": 4,
    "informational": 4,
    "none": 5,
}


def severity_rank(severity: str) -> int:
    """Lower is more urgent; an unknown severity sits with warnings: neither lost nor first."""
    return _RANKS.get(severity.strip().lower(), 2)
