"""Plain records shared by the loader, the checks and the formatters.

Checks never print; they return `Finding`s, and the formatters in `report/` decide how those look.
Dataclasses with slots keep a 5,000-rule run cheap and start-up free of pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from enricher.lint import promql
from enricher.lint.promql import Query


class Severity(IntEnum):
    """How bad a finding is; `--fail-on` compares against these.

    The model every check follows: ERROR means the rule is wrong (Prometheus rejects it, or it
    can never fire, or fires for the wrong thing, or renders an empty label); WARNING means it
    is very likely wrong or fragile; INFO is advice and house policy. Policy findings (missing
    team/runbook, `for` opinions) also carry `Finding.policy`, so a profile can raise, lower or
    drop them as a group.
    """

    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of {names})") from None


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at one place: what every check returns and every formatter reads."""

    path: str
    line: int
    check: str
    severity: Severity
    message: str
    hint: str = ""
    rule: str = ""
    column: int = 1
    policy: bool = False  # house style (labels, annotations, `for` opinions), not a bug

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, -int(self.severity), self.check, self.message)


@dataclass(frozen=True, slots=True)
class Problem:
    """A structural problem the loader met (unknown field, bad duration): `syntax` reports it."""

    line: int
    message: str
    hint: str = ""
    severity: Severity | None = None  # None: the syntax check's own (error)
    # Set when only some Prometheus versions (or Thanos) refuse it: "group-field:<name>".
    # The syntax check compares it with the configured version and drops it when accepted.
    code: str = ""


@dataclass(slots=True, eq=False)
class Rule:
    """One alerting or recording rule, with the line of every field it has."""

    path: str
    group: str
    line: int
    end_line: int = 0
    kind: str = ""  # "alert" or "record"; empty when the rule has neither (or both)
    name: str = ""
    expr: str = ""
    expr_line: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    for_seconds: float | None = None
    keep_firing_for_seconds: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    label_lines: dict[str, int] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    annotation_lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    _query: Query | None = None
    # The expression is parsed on first use of `query` when the loader was asked to be lazy:
    # a run split over two processes then parses each rule once, in the process checking it.
    _unparsed: bool = False
    disabled: frozenset[str] = frozenset()

    @property
    def query(self) -> Query | None:
        """The parsed expression (None when it does not parse: `problems` says why)."""
        if self._unparsed:
            self._unparsed = False
            self._query = _parse(self)
        return self._query

    @query.setter
    def query(self, value: Query | None) -> None:
        self._unparsed = False
        self._query = value

    @property
    def is_alert(self) -> bool:
        return self.kind == "alert"

    @property
    def is_record(self) -> bool:
        return self.kind == "record"

    def finding(
        self,
        check: str,
        severity: Severity,
        message: str,
        hint: str = "",
        line: int | None = None,
        policy: bool = False,
    ) -> Finding:
        return Finding(
            self.path, line or self.line, check, severity, message, hint, self.name, policy=policy
        )


@dataclass(slots=True, eq=False)
class RuleFile:
    """A file (or stdin) as read: its rules, its file-level problems and directives."""

    path: str
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    disabled: frozenset[str] = frozenset()


def _parse(rule: Rule) -> Query | None:
    """Parse `rule.expr`, recording why it does not parse among the rule's problems."""
    try:
        return promql.parse(rule.expr)
    except ValueError as exc:
        rule.problems.append(Problem(rule.expr_line, f"could not parse expression: {exc}"))
    except (promql.TooComplex, RecursionError) as exc:
        why = exc if isinstance(exc, promql.TooComplex) else "nested too deeply"
        rule.problems.append(
            Problem(
                rule.expr_line,
                f"expression not checked: {why}",
                "simplify it or split it into recording rules",
                Severity.INFO,
            )
        )
    return None
